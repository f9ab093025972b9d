"""The one TCP connection between two nodes' multiplexers, and how each proves cluster membership.

The node whose name sorts first connects; the other accepts.  Before anything else both prove
that they hold the cluster's secret key, by HMAC-SHA256 over fresh nonces from both sides (a
stranger on the port, or a node of another cluster, cannot answer, and a recorded exchange cannot
be replayed)::

    connector -> acceptor:  [MAGIC, connector name, nonce_c]
    acceptor -> connector:  [MAGIC, acceptor name, nonce_s, mac("acceptor", nonce_c, nonce_s)]
    connector -> acceptor:  [mac("connector", nonce_s, nonce_c)]

Then both directions carry protocol frames.  The channel is authenticated, not encrypted: keep the
multiplexer port on a network you trust.  Frames are framing.py's; the handshake is the only
state this module adds.
"""

from __future__ import annotations

import errno
import hmac
import os
import socket
import time

import msgpack

from shoal.multiplexer import direct, framing

MAGIC = "shoal-peer-1"
HANDSHAKE_S = 5.0  # a connection that has not proved itself by then is dropped


class HandshakeError(ValueError):
    """The other side could not prove membership of the cluster."""


def _mac(secret: bytes, role: bytes, first: bytes, second: bytes, names: tuple[str, str]) -> bytes:
    message = b"|".join([role, first, second, names[0].encode(), names[1].encode()])
    return hmac.digest(secret, message, "sha256")


class PeerLink(framing.FramedSocket):
    """A TCP connection to another multiplexer, through its handshake and after."""

    def __init__(self, sock: socket.socket, me: str, secret: bytes, connector: bool,
                 expected: str | None = None) -> None:
        super().__init__(sock)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # frames leave at once
        self.me = me
        self.secret = secret
        self.connector = connector
        self.peer = expected  # the connector knows whom it called; the acceptor learns it
        self.state = "connecting" if connector else "handshake"
        self.started = time.monotonic()
        self._nonce = os.urandom(16)
        self._their_nonce = b""
        self.epoch = 0  # once lent to local backends (multiplexer/direct.py): they write too
        self.lent: set[bytes] = set()  # the backends it was lent to
        self._locked = False  # we hold the write lock: a frame of ours is half-sent
        self.lock_wait = False  # output waits for a backend to finish its frame

    @classmethod
    def connect(cls, host: str, port: int, me: str, secret: bytes, peer: str) -> PeerLink:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise ConnectionRefusedError(err, os.strerror(err))
        return cls(sock, me, secret, connector=True, expected=peer)

    @property
    def up(self) -> bool:
        return self.state == "up" and not self.closed

    def expired(self, now: float) -> bool:
        return not self.up and now - self.started > HANDSHAKE_S

    # -- I/O --------------------------------------------------------------------------------------

    def writable(self) -> None:
        """The socket can be written: a pending connect has finished (or failed)."""
        if self.state == "connecting":
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise ConnectionRefusedError(err, os.strerror(err))
            self.state = "handshake"
            self._send_frame(msgpack.packb([MAGIC, self.me, self._nonce]))
        self.flush()

    def read(self) -> list[bytes] | None:
        """Protocol frames received (the handshake's are consumed here); None when closed."""
        frames = super().read()
        if frames is None or self.up:
            return frames
        received = []
        for frame in frames:
            if self.up:
                received.append(frame)  # the handshake ended inside this read
            else:
                self._handshake(frame)
        return received

    def send(self, frame: bytes) -> None:
        """Send a frame (queued while the socket is full, or while a backend that was lent the
        channel is writing into it)."""
        if self._hold_lock():
            self.write(frame)
            self._release_lock()
        else:
            self.queue(frame)

    def flush(self) -> bool:
        """As FramedSocket's; once lent, under the channel's write lock, kept until our frames
        are out whole."""
        if not self.out:
            return True
        if not self._hold_lock():
            return False
        done = super().flush()
        self._release_lock()
        return done

    def _hold_lock(self) -> bool:
        """Hold the channel's write lock if it was lent (there is none to hold otherwise); False
        while a backend holds it."""
        if not self.epoch or self._locked:
            return True
        if not direct.try_lock(self.fd):
            self.lock_wait = True
            return False
        self._locked, self.lock_wait = True, False
        return True

    def _release_lock(self) -> None:
        """Let the backends write again, once no frame of ours is half-sent."""
        if self._locked and (not self.out or self.closed):
            direct.unlock(self.fd)
            self._locked = False

    def close(self) -> None:
        """Close, for the backends it was lent to as well: their copies of the socket then fail."""
        if not self.closed:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        super().close()

    def _send_frame(self, frame: bytes) -> None:
        self.queue(frame)
        self.flush()

    # -- the handshake ----------------------------------------------------------------------------

    def _handshake(self, frame: bytes) -> None:
        try:
            message = msgpack.unpackb(frame, raw=False)
        except Exception:
            raise HandshakeError("not a shoal multiplexer") from None
        if not isinstance(message, list):
            raise HandshakeError("not a shoal multiplexer")
        if self.connector:
            self._connector_step(message)
        else:
            self._acceptor_step(message)

    def _acceptor_step(self, message: list) -> None:
        if not self._their_nonce:
            if (len(message) != 3 or message[0] != MAGIC or not isinstance(message[1], str)
                    or not isinstance(message[2], bytes) or len(message[2]) != 16):
                raise HandshakeError("not a shoal multiplexer")
            self.peer, self._their_nonce = message[1], message[2]
            names = (self.peer, self.me)
            proof = _mac(self.secret, b"acceptor", self._their_nonce, self._nonce, names)
            self._send_frame(msgpack.packb([MAGIC, self.me, self._nonce, proof]))
            return
        names = (self.peer, self.me)
        expected = _mac(self.secret, b"connector", self._nonce, self._their_nonce, names)
        proof = message[0] if len(message) == 1 else None
        if not isinstance(proof, bytes) or not hmac.compare_digest(proof, expected):
            raise HandshakeError(f"{self.peer!r} could not prove the cluster key")
        self.state = "up"

    def _connector_step(self, message: list) -> None:
        if (len(message) != 4 or message[0] != MAGIC or message[1] != self.peer
                or not isinstance(message[2], bytes) or len(message[2]) != 16
                or not isinstance(message[3], bytes)):
            raise HandshakeError(f"the node at this address is not {self.peer!r} of this cluster")
        self._their_nonce = message[2]
        names = (self.me, self.peer)
        expected = _mac(self.secret, b"acceptor", self._nonce, self._their_nonce, names)
        if not hmac.compare_digest(message[3], expected):
            raise HandshakeError(f"{self.peer!r} could not prove the cluster key")
        self._send_frame(msgpack.packb([_mac(self.secret, b"connector", self._their_nonce, self._nonce,
                                                  names)]))
        self.state = "up"
