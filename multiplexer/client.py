"""The backend's side of the multiplexer: requests to other nodes and their streamed answers.

One socket per backend process to the node's multiplexer, shared by every scan and write of the
session; requests are numbered so that many can be in flight at once (an Append over many
partitions sends all its requests before reading any answer).  Requests to another node are
written straight into the multiplexer's channel to that node once the multiplexer has lent it
(multiplexer/direct.py); answers always come back through the multiplexer.
"""

from __future__ import annotations

import select
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from shoal.multiplexer import config as mux_config
from shoal.multiplexer import framing, protocol
from shoal.multiplexer.direct import DirectChannel, recv_with_fds
from shoal.multiplexer.protocol import Kind

ACK_EVERY = 4  # chunks consumed before crediting the worker again
DIRECT_KINDS = frozenset((Kind.QUERY, Kind.CONTROL, Kind.ACK, Kind.CANCEL))  # what the peer serves


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
        self.epoch = 0  # the lent channel it went through (0: through the multiplexer)
        self.block: tuple[str, str] | None = None  # (node, transaction block) it runs in

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

    def take_in_all(self) -> None:
        """Receive the rest of the answer now, crediting the worker as chunks arrive rather than as
        they are consumed: memory then grows with the answer, but the worker is free for the next
        request of its transaction block."""
        acked = self._consumed - self._consumed % ACK_EVERY
        while not self.finished:
            received = self._consumed + len(self.chunks)
            while received - acked >= ACK_EVERY:
                self.client.send(Kind.ACK, self.node, self.req, None, ACK_EVERY)
                acked += ACK_EVERY
            self.client.wait(lambda n=received: self._consumed + len(self.chunks) > n or self.finished)

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
            if self.block is not None and self.client.in_block.get(self.block) is self:
                del self.client.in_block[self.block]


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
        self.in_block: dict[tuple[str, str], Stream] = {}  # the last request into each block
        self._next_req = 0
        self._deferred: list[list[Any]] = []  # messages to send with the next one
        self._awaiting: set[int] = set()  # pings and stats requests waiting for their reply
        self._replies: dict[int, list] = {}
        self.direct: dict[str, DirectChannel] = {}  # peer channels the multiplexer lent us
        self._asking: set[str] = set()  # nodes whose channel we asked for, not answered yet
        self._fds: deque[int] = deque()  # received with the answers to CHANNEL, in order
        self._via_mux: dict[int, str] = {}  # requests to other nodes sent through the multiplexer
        self.me = ""  # this node's name and our routing id, as the multiplexer told us
        self.ident = b""

    def _req(self) -> int:
        self._next_req = (self._next_req + 1) & 0x7FFFFFFF
        return self._next_req

    def send(self, kind: int, node: str, req: int, xact: str | None, payload: Any,
             defer: bool = False) -> None:
        """Send a message, with the deferred ones before it in the same frame (one system call);
        ``defer``: keep it for the next message or wait instead."""
        self._deferred.append([kind, node, b"", req, xact, payload])
        if not defer:
            self.flush()

    def flush(self) -> None:
        """Send the deferred messages now: those for a lent channel into it, one frame per node,
        the others to the multiplexer in one frame."""
        if not self._deferred:
            return
        messages, self._deferred = self._deferred, []
        messages = self._send_direct(messages)
        if not messages:
            return
        try:
            self.sock.sendall(framing.encode(protocol.pack(messages)))
        except OSError:
            self._lost()

    def _send_direct(self, messages: list[list[Any]]) -> list[list[Any]]:
        """Write what may go into lent channels; the rest is for the multiplexer (with a request
        to lend the channel of a node we have not asked for yet)."""
        by_node: dict[str, list[list[Any]]] = {}
        rest = []
        for msg in messages:
            if msg[0] in DIRECT_KINDS and msg[1] in self.direct:
                by_node.setdefault(msg[1], []).append(msg)
            else:
                rest.append(msg)
        for node, batch in by_node.items():
            if not self._write_direct(node, batch):
                rest.extend(batch)
        for msg in list(rest):
            node = msg[1]
            if msg[0] not in DIRECT_KINDS or not node or node == self.me:
                continue
            if msg[0] in (Kind.QUERY, Kind.CONTROL):
                self._via_mux[msg[3]] = node  # later requests there wait for its answer to go direct
            if node not in self.direct and node not in self._asking:
                # it rides in the frame that goes to the multiplexer anyway
                self._asking.add(node)
                rest.append([Kind.CHANNEL, node, b"", 0, None, b""])
        return rest

    def _write_direct(self, node: str, batch: list[list[Any]]) -> bool:
        """Write a batch into node's lent channel, if nothing sent earlier could arrive after it
        and no other process is writing there; False: it goes through the multiplexer."""
        channel = self.direct[node]
        for msg in batch:
            if msg[0] in (Kind.ACK, Kind.CANCEL):
                stream = self.streams.get(msg[3])
                if stream is None or stream.epoch != channel.epoch:
                    return False  # its request went through the multiplexer: so does this
        if node in self._via_mux.values():
            return False  # a request through the multiplexer may still be on its way there
        frame = framing.encode(protocol.pack(
            [[kind, self.me, self.ident, req, xact, payload] for kind, _, _, req, xact, payload in batch]))
        try:
            if not channel.write(frame):
                return False
        except OSError:
            self._drop_channel(node)  # closed under us: the multiplexer knows why
            return False
        for msg in batch:
            stream = self.streams.get(msg[3])
            if stream is not None and msg[0] in (Kind.QUERY, Kind.CONTROL):
                stream.epoch = channel.epoch
        return True

    def _drop_channel(self, node: str) -> None:
        channel = self.direct.pop(node, None)
        if channel is not None:
            channel.close()

    def request(self, node: str, job: bytes, xact: str | None = None, control: bool = False,
                defer: bool = False) -> Stream:
        """Send a job to ``node``; its answer streams back into the returned Stream.  ``control``:
        a job that takes no locks (COMMIT PREPARED...), served ahead of the others.  ``defer``:
        the job leaves with the next message sent, or when this process next waits (a BEGIN goes
        with the transaction's first statement there)."""
        if xact is not None:
            # a block's requests run one after the other on the worker holding it: one still
            # streaming would keep it from this one for ever (its credit waits on us)
            previous = self.in_block.get((node, xact))
            if previous is not None and not previous.finished:
                previous.take_in_all()
        req = self._req()
        stream = Stream(self, node, req)
        self.streams[req] = stream
        if xact is not None:
            stream.block = (node, xact)
            self.in_block[stream.block] = stream
        self.send(Kind.CONTROL if control else Kind.QUERY, node, req, xact, job, defer)
        return stream

    def ping(self, node: str, payload: bytes = b"") -> None:
        """One round trip to a node's multiplexer (measures the transport alone)."""
        reply = self._call(Kind.PING, node, payload, None)
        if reply[0] == Kind.ERROR:
            raise RemoteError(*protocol.decode_error(reply[5]), node=node)

    def ping_run(self, node: str, count: int, window: int) -> dict[str, float]:
        """Have this node's multiplexer exchange ``count`` pings with node's, ``window`` of them in
        flight (multiplexer/pingrun.py): pings, seconds, p50_us, p99_us, max_us."""
        req = self._req()
        self._awaiting.add(req)
        try:
            self.send(Kind.PING_RUN, node, req, None, [count, window])
            self.wait(lambda: req in self._replies)
        except BaseException:
            # A cancel raises twice: in the wait, and again from Python's SIGINT handler at the
            # next bytecode, which may be in here: then the finally clause stops the run.
            self._stop_run(req)
            raise
        finally:
            self._stop_run(req)
        reply = self._replies.pop(req)
        if reply[0] == Kind.ERROR:
            raise RemoteError(*protocol.decode_error(reply[5]), node=node)
        return dict(zip(("pings", "seconds", "p50_us", "p99_us", "max_us"), reply[5], strict=True))

    def _stop_run(self, req: int) -> None:
        """Have the multiplexer stop a ping run nobody waits for any more (sent at most twice)."""
        if req in self._awaiting and req not in self._replies and not self.broken:
            self.send(Kind.CANCEL, "", req, None, b"")
        self._awaiting.discard(req)

    def stats(self) -> str:
        """This node's multiplexer counters, as JSON rows."""
        return self._call(Kind.STATS, "", b"", 5.0)[5]

    def _call(self, kind: int, node: str, payload: bytes, timeout: float | None) -> list:
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
            data, fds = recv_with_fds(self.sock, framing.READ_BYTES)
        except OSError:
            data, fds = b"", []
        self._fds.extend(fds)
        if not data:
            self._lost()
        for frame in self.reader.feed(data):
            for msg in protocol.unpack(frame):
                kind, node, _, req, _, payload = msg
                if kind == Kind.DONE or kind == Kind.ERROR:
                    self._via_mux.pop(req, None)
                stream = self.streams.get(req)
                if stream is None:
                    if kind == Kind.CHANNEL:
                        self._lent(node, msg[2], payload)
                    elif kind == Kind.CHANNEL_DOWN:
                        self._channel_down(node, payload)
                    elif req in self._awaiting:
                        self._replies[req] = msg
                    continue  # the answer to a cancelled request
                if kind == Kind.DATA:
                    stream.chunks.append(payload)
                elif kind == Kind.DONE:
                    stream.result = protocol.decode_done(payload)
                elif kind == Kind.ERROR:
                    stream.error = RemoteError(*protocol.decode_error(payload), node=node)

    def _lent(self, node: str, ident: bytes, payload: Any) -> None:
        """The multiplexer's answer to CHANNEL: the channel's socket came with it, or it declined."""
        self._asking.discard(node)
        if payload is None:
            return  # not now (the channel is not up): we ask again with the next request
        fd = self._fds.popleft() if self._fds else -1
        if fd < 0:
            return
        epoch, me = payload
        self._drop_channel(node)
        self.direct[node] = DirectChannel(node, fd, epoch)
        self.me, self.ident = me, ident

    def _channel_down(self, node: str, epoch: Any) -> None:
        """A lent channel is gone: what went through it will get no answer."""
        channel = self.direct.get(node)
        if channel is not None and channel.epoch == epoch:
            self._drop_channel(node)
        error = RemoteError("08006", f'node "{node}" is unreachable',
                            hint="The statement was aborted; retry once the node is back.")
        for stream in self.streams.values():
            if stream.node == node and stream.epoch == epoch and not stream.finished:
                stream.error = error

    def _lost(self) -> None:
        """The multiplexer went away (it restarts by itself): fail what waits on it."""
        self.broken = True
        self._via_mux.clear()
        for node in list(self.direct):
            self._drop_channel(node)
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
