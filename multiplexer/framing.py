"""Length-prefixed frames over a Unix stream socket: the local hops of the multiplexer.

Backends and workers reach their node's multiplexer through one Unix socket each.  A plain socket
costs one system call per batch and wakes only the two processes involved (measured here: a round
trip costs a third of ZeroMQ's over IPC, whose I/O threads add two hand-offs per message), and its
end of file tells the multiplexer at once that a backend or a worker is gone.  A frame is a
4-byte big-endian length and that many bytes; what the bytes mean is protocol.py's business.
"""

from __future__ import annotations

import os
import socket
import struct

MAX_FRAME = 64 * 1024 * 1024  # a frame larger than this is not ours: the peer is broken or hostile
READ_BYTES = 256 * 1024
_HEADER = struct.Struct("!I")


class FrameError(ValueError):
    """The byte stream is not a sequence of frames."""


def listen(path: str) -> socket.socket:
    """The multiplexer's local socket, usable by this OS user only."""
    try:
        os.unlink(path)  # left behind by a multiplexer that died
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(512)
    sock.setblocking(False)
    return sock


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    return sock


def peer_pid(sock: socket.socket) -> int:
    """The pid of the process at the other end (the kernel's word, not the peer's)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _uid, _gid = struct.unpack("3i", creds)
    return pid


def encode(frame: bytes) -> bytes:
    return _HEADER.pack(len(frame)) + frame


def send_blocking(sock: socket.socket, frame: bytes) -> None:
    """Send one frame on a blocking socket, its header and bytes gathered by the kernel (a
    result chunk is not copied to prepend four bytes)."""
    header = _HEADER.pack(len(frame))
    sent = sock.sendmsg([header, frame])
    if sent < 4 + len(frame):
        sock.sendall(memoryview(header + frame)[sent:] if sent < 4 else memoryview(frame)[sent - 4:])


class FrameReader:
    """Splits received bytes into frames (a frame may arrive in pieces).

    The frames are memoryviews of the received bytes: a result chunk that arrives whole is not
    copied on its way to the unpacker.  The pieces of a frame that comes in several are joined
    once, when its last piece is there.
    """

    def __init__(self) -> None:
        self._pieces: list[bytes | memoryview] = []  # the start of a frame whose rest has not arrived
        self._have = 0  # their length
        self._needed = 0  # how long they must grow before the frame in them is whole

    @property
    def pending(self) -> int:
        """Bytes received of a frame not whole yet."""
        return self._have

    def feed(self, data: bytes) -> list[memoryview]:
        if self._pieces:
            self._pieces.append(data)
            self._have += len(data)
            if self._have < self._needed:
                return []
            data = b"".join(self._pieces)
            self._pieces = []
            self._have = 0
        view = memoryview(data)
        frames = []
        pos = 0
        end = len(data)
        needed = 4
        while end - pos >= 4:
            (size,) = _HEADER.unpack_from(data, pos)
            if size > MAX_FRAME:
                raise FrameError(f"a frame of {size} bytes is larger than {MAX_FRAME}")
            if end - pos - 4 < size:
                needed = 4 + size
                break
            frames.append(view[pos + 4:pos + 4 + size])
            pos += 4 + size
        if pos < end:
            self._pieces.append(view[pos:] if pos else data)
            self._have = end - pos
            self._needed = needed
        return frames


class FramedSocket:
    """A non-blocking socket carrying frames: what comes in is split, what goes out is queued."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = FrameReader()
        self.out = bytearray()
        self.closed = False

    def read(self) -> list[memoryview] | None:
        """Whatever whole frames have arrived; None once the other end has closed."""
        frames: list[memoryview] = []
        while True:
            try:
                data = self.sock.recv(READ_BYTES)
            except BlockingIOError:
                return frames
            except ConnectionError:
                return None
            if not data:
                return None
            frames.extend(self.reader.feed(data))
            if len(data) < READ_BYTES:
                # drained, most likely: the poller reports whatever comes next, so save the
                # system call that would only say EAGAIN
                return frames

    def queue(self, frame: bytes) -> None:
        self.out += _HEADER.pack(len(frame))
        self.out += frame

    def write(self, frame: bytes) -> bool:
        """Send a frame, after what is queued; False while some of it waits for the socket to
        drain.  With nothing queued, the kernel gathers header and frame: no copy."""
        if self.out:
            self.queue(frame)
            return self.flush()
        header = _HEADER.pack(len(frame))
        try:
            sent = self.sock.sendmsg([header, frame])
        except BlockingIOError:
            sent = 0
        except ConnectionError:
            self.closed = True
            return True
        if sent < 4:
            self.out += header[sent:]
            self.out += frame
        elif sent < 4 + len(frame):
            self.out += memoryview(frame)[sent - 4:]
        return not self.out

    def flush(self) -> bool:
        """Send what is queued; False while some of it waits for the socket to drain."""
        while self.out:
            try:
                sent = self.sock.send(self.out)
            except BlockingIOError:
                return False
            except ConnectionError:
                self.out.clear()
                self.closed = True
                return True
            del self.out[:sent]
        return True

    def close(self) -> None:
        self.closed = True
        self.sock.close()


class Connection(FramedSocket):
    """A backend's or a worker's connection, as the multiplexer holds it."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.pid = peer_pid(sock)
        self.ident = b""  # the multiplexer's name for it
