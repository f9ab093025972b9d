"""Writing to a peer channel from several processes: how a request skips its own multiplexer.

A request from a backend used to take six wake-ups to come back (backend, its multiplexer, the
peer's multiplexer, a worker, and the two multiplexers again), each costing tens of microseconds
of latency and CPU.  The multiplexer now lends its backends the channel's socket itself (passed
over the Unix socket, ``SCM_RIGHTS``): a backend writes its request straight into the one TCP
connection to the peer, and only the answer passes through its multiplexer.  There is still one
connection per pair of nodes.

Every writer puts whole frames on the stream under a POSIX record lock on the socket.  Such a lock
belongs to a process, not to a file description, so it excludes the processes that share the
socket; the multiplexer keeps it while a frame of its own is half-sent.  Reading stays the
multiplexer's alone.  A process that finds the lock taken hands its messages to the multiplexer
instead: under load the multiplexer's batching (many messages per system call) is worth more
than the hop it costs.  Each request keeps one way for all its messages, so none overtakes another.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import select
import socket

_BUSY = (errno.EAGAIN, errno.EACCES)
_FDS_SPACE = socket.CMSG_SPACE(4 * array.array("i").itemsize)  # room for a few passed sockets


def try_lock(fd: int) -> bool:
    """Take the channel's write lock if nobody holds it."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _BUSY:
            return False
        raise
    return True


def unlock(fd: int) -> None:
    fcntl.lockf(fd, fcntl.LOCK_UN)


def send_with_fd(sock: socket.socket, data: bytes, fd: int) -> int:
    """Send data with a file descriptor attached to its first byte; the bytes sent."""
    return sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


def recv_with_fds(sock: socket.socket, size: int) -> tuple[bytes, list[int]]:
    """Receive data and the file descriptors that came with it."""
    data, ancdata, _flags, _addr = sock.recvmsg(size, _FDS_SPACE)
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[:len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    return data, fds


class DirectChannel:
    """A peer channel's socket as a backend holds it: frames go out whole, under the lock."""

    def __init__(self, node: str, fd: int, epoch: int) -> None:
        self.node = node
        self.fd = fd
        self.epoch = epoch

    def write(self, data: bytes) -> bool:
        """Write one or more whole frames, unless another process is writing into the channel
        (False: send through the multiplexer instead, which batches); OSError if it is gone."""
        fd = self.fd
        if not try_lock(fd):
            return False
        try:
            view = memoryview(data)
            while view:
                try:
                    sent = os.write(fd, view)
                except BlockingIOError:  # the socket is the multiplexer's: non-blocking
                    select.select([], [fd], [], 1.0)  # a frame once begun must end
                    continue
                view = view[sent:]
        finally:
            unlock(fd)
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
