"""The backend's side of the multiplexer: requests to other nodes and their streamed answers.

One socket per backend process to the node's multiplexer, shared by every scan and write of the
session; requests are numbered so that many can be in flight at once (an Append over many
partitions sends all its requests before reading any answer).
"""

from __future__ import annotations

import select
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from shoal.multiplexer import config as mux_config
from shoal.multiplexer import framing, protocol
from shoal.multiplexer.protocol import Kind

ACK_EVERY = 4  # chunks consumed before crediting the worker again


class RemoteError(Exception):
    """An error raised on another node (or by the multiplexer), with PostgreSQL's fields."""

    def __init__(self, sqlstate: str, message: str, detail: str | None = None, hint: str | None = None,
                 node: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint
        self.node = node


class Stream:
    """The answer to one request: DATA chunks, then DONE or ERROR."""

    def __init__(self, client: MuxClient, node: str, req: int) -> None:
        self.client = client
        self.node = node
        self.req = req
        self.chunks: deque[bytes] = deque()
        self.result: tuple[str, int] | None = None
        self.error: RemoteError | None = None
        self._consumed = 0
        self.closed = False

    @property
    def finished(self) -> bool:
        return self.result is not None or self.error is not None

    def __iter__(self) -> Iterator[bytes]:
        """The result's binary tuple data, chunk by chunk; raises RemoteError on failure."""
        while True:
            while not self.chunks and not self.finished:
                self.client.wait(lambda: bool(self.chunks) or self.finished)
            if self.chunks:
                yield self.chunks.popleft()
                self._consumed += 1
                if self._consumed % ACK_EVERY == 0 and not self.finished:
                    self.client.send(Kind.ACK, self.node, self.req, None, ACK_EVERY)
                continue
            self._close()
            if self.error is not None:
                raise self.error
            return

    def wait(self) -> tuple[str, int]:
        """The command tag and row count, once the request is done (data is discarded)."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    def cancel(self) -> None:
        """Stop the request if it still runs (a scan ended early, or the query was cancelled)."""
        if not self.finished and not self.closed:
            self.client.send(Kind.CANCEL, self.node, self.req, None, b"")
        self._close()

    def forget(self) -> None:
        """Nobody will wait for the answer (it is dropped when it comes); the request goes on."""
        self._close()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.client.streams.pop(self.req, None)


class MuxClient:
    """This process's connection to its node's multiplexer."""

    def __init__(self, path: str, wait_readable: Callable[[int, float], Any] | None = None) -> None:
        # When this process exits the socket closes, and the multiplexer cancels its work.
        self.sock = framing.connect(path)
        self.broken = False
        self.fd = self.sock.fileno()
        self.reader = framing.FrameReader()
        self._wait_readable = wait_readable
        if wait_readable is None:
            self._poll = select.poll()
            self._poll.register(self.fd, select.POLLIN)
        self.streams: dict[int, Stream] = {}
        self._next_req = 0
        self._deferred: list[list[Any]] = []  # messages to send with the next one
        self._awaiting: set[int] = set()  # pings and stats requests waiting for their reply
        self._replies: dict[int, list] = {}

    def _req(self) -> int:
        self._next_req = (self._next_req + 1) & 0x7FFFFFFF
        return self._next_req

    def send(self, kind: Kind, node: str, req: int, xact: str | None, payload: Any,
             defer: bool = False) -> None:
        """Send a message, with the deferred ones before it in the same frame (one system call);
        ``defer``: keep it for the next message or wait instead."""
        self._deferred.append([kind, node, b"", req, xact, payload])
        if not defer:
            self.flush()

    def flush(self) -> None:
        """Send the deferred messages now."""
        if not self._deferred:
            return
        messages, self._deferred = self._deferred, []
        try:
            self.sock.sendall(framing.encode(protocol.pack(messages)))
        except OSError:
            self._lost()

    def request(self, node: str, job: bytes, xact: str | None = None, control: bool = False,
                defer: bool = False) -> Stream:
        """Send a job to ``node``; its answer streams back into the returned Stream.  ``control``:
        a job that takes no locks (COMMIT PREPARED...), served ahead of the others.  ``defer``:
        the job leaves with the next message sent, or when this process next waits (a BEGIN goes
        with the transaction's first statement there)."""
        req = self._req()
        stream = Stream(self, node, req)
        self.streams[req] = stream
        self.send(Kind.CONTROL if control else Kind.QUERY, node, req, xact, job, defer)
        return stream

    def ping(self, node: str, payload: bytes = b"") -> None:
        """One round trip to a node's multiplexer (measures the transport alone)."""
        reply = self._call(Kind.PING, node, payload, None)
        if reply[0] == Kind.ERROR:
            raise RemoteError(*protocol.decode_error(reply[5]), node=node)

    def stats(self) -> str:
        """This node's multiplexer counters, as JSON rows."""
        return self._call(Kind.STATS, "", b"", 5.0)[5]

    def _call(self, kind: Kind, node: str, payload: bytes, timeout: float | None) -> list:
        req = self._req()
        self._awaiting.add(req)
        try:
            self.send(kind, node, req, None, payload)
            self.wait(lambda: req in self._replies, timeout)
            return self._replies.pop(req)
        finally:
            self._awaiting.discard(req)

    # -- receiving --------------------------------------------------------------------------------

    def wait(self, ready: Callable[[], bool], timeout: float | None = None) -> None:
        """Receive until ready() holds.  Inside a backend the wait sleeps on the backend's latch,
        so that cancel and statement_timeout interrupt it."""
        waited = 0.0
        self.flush()
        while not ready():
            if timeout is not None and waited >= timeout:
                raise TimeoutError("the multiplexer did not answer")
            step = 1.0 if timeout is None else min(1.0, timeout - waited)
            if self._wait_readable is not None:
                readable = self._wait_readable(self.fd, step)
            else:
                readable = bool(self._poll.poll(int(step * 1000)))
            if readable:
                self._receive()
            else:
                waited += step

    def _receive(self) -> None:
        try:
            data = self.sock.recv(framing.READ_BYTES)
        except OSError:
            data = b""
        if not data:
            self._lost()
        for frame in self.reader.feed(data):
            for msg in protocol.unpack(frame):
                kind, node, _, req, _, payload = msg
                stream = self.streams.get(req)
                if stream is None:
                    if req in self._awaiting:
                        self._replies[req] = msg
                    continue  # the answer to a cancelled request
                if kind == Kind.DATA:
                    stream.chunks.append(payload)
                elif kind == Kind.DONE:
                    stream.result = protocol.decode_done(payload)
                elif kind == Kind.ERROR:
                    stream.error = RemoteError(*protocol.decode_error(payload), node=node)


    def _lost(self) -> None:
        """The multiplexer went away (it restarts by itself): fail what waits on it."""
        self.broken = True
        error = RemoteError("08006", "lost the connection to this node's multiplexer",
                            hint="It restarts by itself; retry the statement.")
        for stream in list(self.streams.values()):
            if not stream.finished:
                stream.error = error
        raise error


_client: MuxClient | None = None


def connect() -> MuxClient:
    """This backend's client (created on first use)."""
    global _client
    if _client is None or _client.broken:
        import _shoal_pg

        config = mux_config.load(_shoal_pg.setting)
        _client = MuxClient(config.ipc_path, lambda fd, timeout: _shoal_pg.wait(fd, timeout))
    return _client


def stats_json() -> str:
    """JSON rows for the view shoal.mux_stats (called by the extension)."""
    try:
        return connect().stats()
    except TimeoutError:
        raise RemoteError(
            "08006", "the multiplexer of this node does not answer",
            hint="It is a background worker: see the server log, and check shared_preload_libraries.",
        ) from None
