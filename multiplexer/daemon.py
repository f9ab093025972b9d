"""The multiplexer of one node: a background worker started (and restarted) by PostgreSQL.

It moves messages and does nothing else.  Backends and workers of this node reach it on a Unix
socket; the other nodes' multiplexers on one authenticated TCP channel each.  A request from a
backend goes to the destination node's multiplexer, which hands it to an idle worker (or to the
worker that holds the request's transaction); the worker's answers travel back the same way.
Whatever is pending for one destination leaves in one frame per loop turn.  Backends may write
their requests into a channel themselves, once it has been lent to them (direct.py): then only
the answers pass through here.

Failure handling lives here too: a peer that falls silent fails the requests waiting on it, a
worker or a backend that dies has its work cancelled, a malformed frame is counted and dropped.

The pool is fixed, and a transaction holds its worker until it ends, so the pool itself can be
part of a wait cycle across nodes.  Two rules keep it from hanging: CONTROL jobs (COMMIT PREPARED
and the like, which take no locks) go first and always find a worker, because one is kept for
them; and a job that waits longer than shoal.deadlock_timeout for a worker fails as a possible
deadlock (SQLSTATE 40P01), which aborts its transaction and frees what it held.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field

from shoal.multiplexer import direct, framing, heap, protocol
from shoal.multiplexer.config import MuxConfig
from shoal.multiplexer.peerlink import HandshakeError, PeerLink
from shoal.multiplexer.peers import (
    HEARTBEAT_S,
    NODES_SQL,
    Channel,
    node_address,
)
from shoal.multiplexer.pingrun import RUN_CLIENT, RUN_SHIFT, STALL_S, PingRun
from shoal.multiplexer.protocol import Kind, ProtocolError
from shoal.multiplexer.stats import Snapshot

log = logging.getLogger("shoal.multiplexer")

POLL_MS = 100  # also how quickly a shutdown request is noticed
LOCK_RETRY_S = 0.0005  # while a backend writes a frame into a channel we want to write to
REFRESH_NODES_S = 5.0
LIVENESS_S = 1.0
RECONNECT_S = 0.5
# how often this node looks for prepared transactions left in doubt (consistent reads of this node
# wait for them), and how old one must be to count, unless it was prepared before a restart
RESOLVE_S = 2.0
IN_DOUBT_AFTER_S = 10.0
CLIENT_BLOCKS_KEPT = 32
PURGE_EVERY = 30  # ... and, every so many times, forgets the decisions nobody needs any more
IN, OUT = select.EPOLLIN, select.EPOLLOUT

# kinds of message, as sets: every message passes some of these tests
_JOBS = frozenset((Kind.QUERY, Kind.CONTROL))
_REQUESTS = frozenset((Kind.QUERY, Kind.CONTROL, Kind.PING))  # followed in outbound until answered
_ANSWERS = frozenset((Kind.DATA, Kind.DONE, Kind.ERROR, Kind.PONG))
_LAST_ANSWERS = frozenset((Kind.DONE, Kind.ERROR, Kind.PONG))

JobKey = tuple[str, bytes, int]  # (origin node, client routing id, request)


def _error(sqlstate: str, message: str, hint: str | None = None) -> bytes:
    return protocol.encode_error(sqlstate, message, None, hint)


@dataclass
class Worker:
    ident: bytes
    pid: int
    job: JobKey | None = None
    xact: str | None = None  # the distributed transaction this worker holds open
    out: list = field(default_factory=list)


@dataclass(slots=True)
class Outbound:
    """A request of one of our backends, on its way to (or answered by) another node."""

    node: str
    sent: float
    answered: bool = False


class Multiplexer:
    def __init__(self, config: MuxConfig, read_catalog, check_interrupts) -> None:
        self.config = config
        self.me = config.node
        self._read_catalog = read_catalog  # (sql) -> list of text rows
        self._check_interrupts = check_interrupts
        self.poller = select.epoll()
        self.channels: dict[str, Channel] = {}
        self.workers: dict[bytes, Worker] = {}
        self.idle: deque[bytes] = deque()
        self.queue: deque[list] = deque()  # QUERY messages waiting for any worker
        self.queued_at: dict[JobKey, float] = {}
        self.control: deque[list] = deque()  # CONTROL messages: served first
        self.xact_worker: dict[str, bytes] = {}  # sticky transactions
        self.xact_queue: dict[str, deque[list]] = {}  # jobs waiting for their transaction's worker
        self.running: dict[JobKey, bytes] = {}  # job -> worker
        self.outbound: dict[tuple[bytes, int], Outbound] = {}
        # client -> its latest blocks {(node, xact): None}, rolled back if the client dies; a backend
        # has few open at a time, so older ones (long ended) are forgotten
        self.client_xacts: dict[bytes, dict[tuple[str, str], None]] = {}
        self.client_out: dict[bytes, list] = {}
        self.conns: dict[int, framing.Connection] = {}  # local connections by file descriptor
        self.links: dict[int, PeerLink] = {}  # peer connections, proved or still in their handshake
        self.by_ident: dict[bytes, framing.Connection] = {}
        self._next_ident = 0
        self.malformed = 0
        self._next_refresh = 0.0
        self._next_liveness = 0.0
        self._next_heartbeat = 0.0
        # soon after a (re)start, which is when a crash may have left prepared parts here
        self._next_resolve = time.monotonic() + RESOLVE_S
        self._resolves = 0
        self._epochs = 0  # channels lent so far (each lent link gets the next number)
        self._pings = 0
        self.lending: list[tuple[bytes, str, PeerLink]] = []  # channels to hand out at the flush
        self.ping_runs: dict[int, PingRun] = {}  # measurements of channels (pingrun.py)
        self._run_ids = 0
        self._open_sockets()

    # -- sockets ----------------------------------------------------------------------------------

    def _open_sockets(self) -> None:
        config = self.config
        self.listener = framing.listen(config.ipc_path)  # for this OS user only
        self.poller.register(self.listener.fileno(), IN)

        self.peer_listener = None
        if config.secret is None:
            log.warning("shoal.cluster_secret is not set: this node accepts no peer channel")
        else:
            self.peer_listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.peer_listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.peer_listener.bind((config.listen_host, config.mux_port))
            self.peer_listener.listen(64)
            self.peer_listener.setblocking(False)
            self.poller.register(self.peer_listener.fileno(), IN)

        self.metrics = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.metrics.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.metrics.bind(("127.0.0.1", config.metrics_port))
        self.metrics.listen(8)
        self.metrics.setblocking(False)
        self.poller.register(self.metrics.fileno(), IN)

    # -- peer links ---------------------------------------------------------------------------------

    def _connect(self, channel: Channel, now: float) -> None:
        """Call a peer (we connect to the nodes whose names sort after ours)."""
        channel.next_attempt = now + RECONNECT_S
        try:
            link = PeerLink.connect(channel.address.host, channel.address.mux_port, self.me,
                                    self.config.secret, channel.name)
        except OSError as exc:
            log.debug("cannot call %s: %s", channel.name, exc)
            return
        channel.link = link
        self.links[link.fd] = link
        self.poller.register(link.fd, IN | OUT)

    def _accept_peers(self) -> None:
        while True:
            try:
                sock, _ = self.peer_listener.accept()
            except BlockingIOError:
                return
            link = PeerLink(sock, self.me, self.config.secret, connector=False)
            self.links[link.fd] = link
            self.poller.register(link.fd, IN)

    def _from_link(self, link: PeerLink, events: int) -> None:
        try:
            if events & OUT:
                link.writable()
                if link.state != "connecting" and not link.out:
                    self.poller.modify(link.fd, IN)
            frames = link.read() if events & (IN | select.EPOLLERR | select.EPOLLHUP) else []
        except (HandshakeError, framing.FrameError) as exc:
            self.malformed += 1
            log.warning("dropped a peer connection: %s", exc)
            frames = None
        except OSError as exc:  # a refused or broken connection: the peer is down or restarting
            log.debug("peer connection to %s failed: %s", link.peer, exc)
            frames = None
        if frames is None or link.closed:
            self._link_lost(link)
            return
        if link.up and not link.connector and link.peer is not None:
            channel = self.channels.get(link.peer)
            if channel is None or channel.link is not link:
                if not self._adopt(link):
                    return
        channel = self.channels.get(link.peer or "")
        if channel is None or channel.link is not link or not link.up:
            return
        if channel.state != "up" and channel.heard(time.monotonic()):
            log.info("channel to %s is up", channel.name)
        for frame in frames:
            self._from_peer(channel, frame)

    def _adopt(self, link: PeerLink) -> bool:
        """A peer proved itself on a connection it made: it becomes that peer's channel."""
        channel = self._channel(link.peer)
        if channel is None or link.peer > self.me:
            log.warning("a peer calling itself %r is not a node that calls this one; dropped", link.peer)
            self.malformed += 1
            self._link_lost(link)
            return False
        if channel.link is not None and channel.link is not link:
            self._link_lost(channel.link)
        channel.link = link
        return True

    def _link_lost(self, link: PeerLink) -> None:
        self.links.pop(link.fd, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(link.fd)
        link.close()
        for client in link.lent:  # what they wrote into it gets no answer
            self._to_client(client, [Kind.CHANNEL_DOWN, link.peer or "", b"", 0, None, link.epoch])
        link.lent.clear()
        channel = self.channels.get(link.peer or "")
        if channel is not None and channel.link is link:
            channel.link = None
            if channel.state == "up":
                channel.state = "down"
                log.warning("channel to %s is down (connection lost)", channel.name)
                self._peer_lost(channel, "is unreachable")

    def _close_channel(self, channel: Channel) -> None:
        if channel.link is not None:
            self._link_lost(channel.link)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        log.info("multiplexer of node %s: peers on port %d, local %s, metrics on %d",
                 self.me, self.config.mux_port, self.config.ipc_path, self.config.metrics_port)
        while True:
            waiting = self._epochs and any([link.lock_wait for link in self.links.values()])
            ready = self.poller.poll(LOCK_RETRY_S if waiting else POLL_MS / 1000)
            self._check_interrupts()
            now = time.monotonic()
            for fd, events in ready:
                conn = self.conns.get(fd)
                if conn is not None:
                    self._from_connection(conn, events)
                    continue
                link = self.links.get(fd)
                if link is not None:
                    self._from_link(link, events)
                elif fd == self.listener.fileno():
                    self._accept()
                elif self.peer_listener is not None and fd == self.peer_listener.fileno():
                    self._accept_peers()
                elif fd == self.metrics.fileno():
                    self._serve_metrics()
            self._dispatch()
            self._periodic(now)
            if self.ping_runs:
                self._send_pings()
            self._flush()

    def _unpack(self, frame: bytes, source: str) -> list:
        try:
            return protocol.unpack(frame)
        except ProtocolError as exc:
            self.malformed += 1
            if self.malformed <= 10 or self.malformed % 1000 == 0:
                log.warning("dropped a malformed frame from %s (%d so far): %s", source, self.malformed, exc)
            return []

    # -- from this node's backends and workers ----------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            conn = framing.Connection(sock)
            self._next_ident += 1
            conn.ident = self._next_ident.to_bytes(8, "big")
            self.conns[conn.fd] = conn
            self.by_ident[conn.ident] = conn
            self.poller.register(conn.fd, IN)

    def _from_connection(self, conn: framing.Connection, events: int) -> None:
        if events & OUT and conn.flush():
            self.poller.modify(conn.fd, IN)
        if not events & (IN | select.EPOLLERR | select.EPOLLHUP):
            return
        try:
            frames = conn.read()
        except framing.FrameError as exc:
            self.malformed += 1
            log.warning("closed a local connection (pid %d) that sent no frames: %s", conn.pid, exc)
            frames = None
        if frames is None:
            self._disconnected(conn)
            return
        worker = self.workers.get(conn.ident)
        now = time.monotonic()
        for frame in frames:
            for msg in self._unpack(frame, f"local process {conn.pid}"):
                if worker is not None:
                    self._from_worker(worker, msg)
                else:
                    self._from_client(conn.ident, msg, now)
                    worker = self.workers.get(conn.ident)  # a HELLO makes it a worker

    def _from_client(self, client: bytes, msg: list, now: float) -> None:
        kind, node, _, req, xact, payload = msg
        if kind == Kind.HELLO:
            worker = Worker(client, self.by_ident[client].pid)
            self.workers[client] = worker
            self.idle.append(client)
            log.info("worker pid %d ready", worker.pid)
            return
        if kind == Kind.STATS:
            self._to_client(client, [Kind.STATS, self.me, b"", req, None, self.snapshot().to_json()])
            return
        if kind == Kind.CHANNEL:
            self._lend(client, node)
            return
        if kind == Kind.PING_RUN:
            self._start_ping_run(client, node, req, payload)
            return
        if kind == Kind.CANCEL and self.ping_runs and self._cancel_ping_run(client, req):
            return
        if xact is not None and kind in _JOBS:
            self._note_block(client, node, xact)
        if node == self.me or not node:
            if kind == Kind.PING:
                self._to_client(client, [Kind.PONG, self.me, b"", req, None, payload])
            else:
                self._serve([kind, self.me, client, req, xact, payload])
            return
        channel = self.channels.get(node) or self._channel(node)
        if channel is None or not channel.accepts_requests(now):
            if kind in _REQUESTS and channel is None:
                self._to_client(client, [Kind.ERROR, node, b"", req, None,
                                         _error("42704", f'node "{node}" is not in shoal.nodes',
                                                "Add it with shoal.add_node().")])
            elif kind in _REQUESTS:
                self._to_client(client, [Kind.ERROR, node, b"", req, None,
                                         _error("08006", f'node "{node}" is unreachable',
                                                "Check that the node runs and that its multiplexer "
                                                "is reachable (shoal status).")])
            return
        if kind in _REQUESTS:
            self.outbound[(client, req)] = Outbound(node, now)
        elif kind == Kind.CANCEL:
            self.outbound.pop((client, req), None)
        msg[1] = self.me  # the message goes on as it came, now naming its origin and sender
        msg[2] = client
        channel.out.append(msg)

    def _lend(self, client: bytes, node: str) -> None:
        """Lend the channel to node to a backend, if it is up (multiplexer/direct.py)."""
        channel = self.channels.get(node)
        link = channel.link if channel is not None else None
        if link is None or not link.up or channel.state != "up":
            self._to_client(client, [Kind.CHANNEL, node, client, 0, None, None])
            return
        if not link.epoch:
            self._epochs += 1
            link.epoch = self._epochs
        self.lending.append((client, node, link))

    def _hand_out(self) -> None:
        """Send the lent channels' sockets, after everything queued before them has left: a
        backend's first request to a node came through us, and what it writes itself comes after."""
        lending, self.lending = self.lending, []
        for client, node, link in lending:
            conn = self.by_ident.get(client)
            if conn is None:
                continue
            channel = self.channels.get(node)
            if conn.out or channel is None or channel.link is not link or not link.up or link.out:
                self._send_local(client, [[Kind.CHANNEL, node, client, 0, None, None]])  # later
                continue
            if not self._send_channel(conn, node, link):
                self._send_local(client, [[Kind.CHANNEL, node, client, 0, None, None]])

    def _send_channel(self, conn: framing.Connection, node: str, link: PeerLink) -> bool:
        """Send a local process the channel's socket, with a CHANNEL message; False if it could
        not go now."""
        lent = [Kind.CHANNEL, node, conn.ident, 0, None, [link.epoch, self.me]]
        data = framing.encode(protocol.pack([lent]))
        try:
            sent = direct.send_with_fd(conn.sock, data, link.fd)
        except OSError:
            return False  # full, or the process is gone (its end of file comes next)
        link.lent.add(conn.ident)
        if sent < len(data):
            conn.out += data[sent:]
            self.poller.modify(conn.fd, IN | OUT)
        return True

    def _from_worker(self, worker: Worker, msg: list) -> None:
        kind, origin, client, req, xact, payload = msg
        if kind not in (Kind.DATA, Kind.DONE, Kind.ERROR):
            self.malformed += 1
            return
        if kind != Kind.DATA:
            # the job is over; the worker keeps the transaction it still holds (xact), if any
            self.running.pop((origin, client, req), None)
            worker.job = None
            if worker.xact is not None and xact is None:
                self.xact_worker.pop(worker.xact, None)
                waiting = self.xact_queue.pop(worker.xact, None)
                if waiting:  # jobs of a finished transaction: a new one, any worker may serve it
                    self.queue.extendleft(reversed(waiting))
            worker.xact = xact
            if xact is not None:
                self.xact_worker[xact] = worker.ident
            else:
                self.idle.append(worker.ident)
        # the transaction it still holds goes with the answer: the asking node's multiplexer
        # rolls it back if the backend has gone (it may never have seen the request)
        held = xact if kind != Kind.DATA else None
        self._answer(origin, client, [kind, origin, client, req, held, payload])

    def _answer(self, origin: str, client: bytes, msg: list) -> None:
        """Send a worker's (or our own) answer towards the backend that asked."""
        if origin == self.me:
            key = (client, msg[3])
            self._to_client(client, msg)
            return self._forget_outbound(key, msg[0])
        channel = self.channels.get(origin)
        if channel is not None:
            channel.out.append(msg)

    # -- from other nodes -------------------------------------------------------------------------

    def _from_peer(self, channel: Channel, frame: bytes) -> None:
        now = time.monotonic()
        if channel.heard(now):
            log.info("channel to %s is up", channel.name)
        channel.stats.bytes_in += len(frame)
        messages = self._unpack(frame, f"node {channel.name}")
        channel.stats.msgs_in += len(messages)
        outbound, latencies, name = self.outbound, channel.stats.latencies, channel.name
        for msg in messages:
            kind = msg[0]
            if kind in _ANSWERS:
                if msg[1] != self.me:
                    self.malformed += 1
                    continue
                client = msg[2]
                if client == RUN_CLIENT:  # a ping of a run of ours
                    run = self.ping_runs.get(msg[3] >> RUN_SHIFT)
                    if run is not None and run.answered(msg[3], now):
                        self._ping_run_done(run)
                    continue
                key = (client, msg[3])
                pending = outbound.pop(key, None) if kind in _LAST_ANSWERS else outbound.get(key)
                if pending is not None and not pending.answered:
                    pending.answered = True
                    latencies.append((now - pending.sent) * 1e6)
                if client not in self.by_ident:
                    self._orphan_answer(channel, msg)
                    continue
                if msg[4] is not None:
                    self._note_block(client, name, msg[4])
                    msg[4] = None
                msg[1] = name  # on to the backend, as from the node that answered
                msg[2] = b""
                self._to_client(client, msg)
            elif kind == Kind.PING:
                msg[0] = Kind.PONG  # back as it came: to the same origin, client and request
                msg[4] = None
                channel.out.append(msg)
            elif kind == Kind.HEARTBEAT:
                pass
            elif msg[1] != channel.name:
                self.malformed += 1  # a peer may only speak for itself
            else:
                self._serve(msg)

    def _note_block(self, client: bytes, node: str, xact: str) -> None:
        """A block of client's transaction is open on node: rolled back if the client dies."""
        blocks = self.client_xacts.setdefault(client, {})
        if (node, xact) not in blocks:
            blocks[(node, xact)] = None
            if len(blocks) > CLIENT_BLOCKS_KEPT:
                del blocks[next(iter(blocks))]

    def _orphan_answer(self, channel: Channel, msg: list) -> None:
        """An answer for a backend that has gone (its request went straight into the channel, so
        we could not cancel it when it went): stop the request, and roll back its block."""
        kind, _, client, req, xact, _ = msg
        if not client:
            return  # our own heartbeat's PONG
        if kind == Kind.DATA:
            channel.out.append([Kind.CANCEL, self.me, client, req, None, b""])
        elif xact is not None:
            channel.out.append([Kind.QUERY, self.me, client, 0, xact, protocol.encode_job("rollback")])

    def _forget_outbound(self, key: tuple[bytes, int], kind: int) -> None:
        if kind in _LAST_ANSWERS:
            self.outbound.pop(key, None)

    # -- measuring a channel (pingrun.py) ---------------------------------------------------------

    def _start_ping_run(self, client: bytes, node: str, req: int, payload: object) -> None:
        channel = None
        if node and node != self.me:
            channel = self.channels.get(node) or self._channel(node)
        if channel is None:
            error = _error("42704", f'node "{node}" is not another node of shoal.nodes',
                           "Name a node of shoal.nodes other than this one.")
        elif channel.link is None or not channel.link.up or channel.state != "up":
            error = _error("08006", f'node "{node}" is unreachable',
                           "Check that the node runs and that its multiplexer is reachable (shoal status).")
        else:
            self._run_ids += 1
            try:
                self.ping_runs[self._run_ids] = PingRun.asked(self._run_ids, client, req, node, payload)
                return
            except ValueError as exc:
                error = _error("22023", str(exc))
        self._to_client(client, [Kind.ERROR, node, b"", req, None, error])

    def _send_pings(self) -> None:
        now = time.monotonic()
        for run in self.ping_runs.values():
            channel = self.channels.get(run.node)
            if channel is not None:
                channel.out.extend(run.top_up(self.me, now))

    def _ping_run_done(self, run: PingRun) -> None:
        del self.ping_runs[run.ident]
        self._to_client(run.client, [Kind.PING_RUN, run.node, b"", run.req, None, run.result()])

    def _cancel_ping_run(self, client: bytes, req: int) -> bool:
        for ident, run in self.ping_runs.items():
            if run.client == client and run.req == req:
                del self.ping_runs[ident]
                return True
        return False

    def _end_ping_runs(self, ended, error: bytes | None) -> None:
        """Drop the runs ended(run) picks, telling their backends error (if any)."""
        for ident, run in list(self.ping_runs.items()):
            if ended(run):
                del self.ping_runs[ident]
                if error is not None:
                    self._to_client(run.client, [Kind.ERROR, run.node, b"", run.req, None, error])

    # -- serving jobs on this node's workers ------------------------------------------------------

    def _serve(self, msg: list) -> None:
        kind, origin, client, req, xact, payload = msg
        key = (origin, client, req)
        if kind == Kind.QUERY:
            if xact is not None and xact in self.xact_worker:
                self.xact_queue.setdefault(xact, deque()).append(msg)
            else:
                self.queue.append(msg)
                self.queued_at[key] = time.monotonic()
        elif kind == Kind.CONTROL:
            if xact is not None and xact in self.xact_worker:
                self.xact_queue.setdefault(xact, deque()).append(msg)
            else:
                self.control.append(msg)
        elif kind == Kind.CANCEL and req == 0:
            # the client is gone, and its node cannot name what it wrote to us itself
            for running in [k for k in self.running if k[0] == origin and k[1] == client]:
                self._cancel_running(running)
            self._drop_jobs_of(lambda m: m[1] == origin and m[2] == client)
        elif kind in (Kind.ACK, Kind.CANCEL):
            ident = self.running.get(key)
            if ident is not None:
                worker = self.workers[ident]
                worker.out.append(msg)
                if kind == Kind.CANCEL:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGINT)
            elif kind == Kind.CANCEL:
                self._drop_queued(key)

    def _drop_queued(self, key: JobKey) -> None:
        for queue in (self.queue, self.control, *self.xact_queue.values()):
            for msg in list(queue):
                if (msg[1], msg[2], msg[3]) == key:
                    queue.remove(msg)
                    self.queued_at.pop(key, None)
                    self._answer(key[0], key[1], [Kind.ERROR, key[0], key[1], key[2], None,
                                                  _error("57014", "canceling statement due to user request")])

    def _dispatch(self) -> None:
        # jobs of open transactions go to their worker once it is free
        for xact, waiting in list(self.xact_queue.items()):
            ident = self.xact_worker.get(xact)
            worker = self.workers.get(ident) if ident else None
            if worker is None:
                self.xact_queue.pop(xact)
                for msg in waiting:
                    self._fail_job(msg, "the worker holding this transaction is gone")
                continue
            if worker.job is None and waiting:
                self._start(worker, waiting.popleft())
            if not waiting:
                self.xact_queue.pop(xact, None)
        while self.control and self.idle:
            worker = self._idle_worker()
            if worker is not None:
                self._start(worker, self.control.popleft())
        # the last idle worker is kept for CONTROL jobs: they may be what the others wait for
        reserve = 1 if len(self.workers) > 1 else 0
        while self.queue and len(self.idle) > reserve:
            worker = self._idle_worker()
            if worker is None:
                continue
            ident = worker.ident
            msg = self.queue.popleft()
            self.queued_at.pop((msg[1], msg[2], msg[3]), None)
            xact = msg[4]
            if xact is not None and xact in self.xact_worker:
                self.idle.appendleft(ident)
                self.xact_queue.setdefault(xact, deque()).append(msg)
                continue
            self._start(worker, msg)

    def _idle_worker(self) -> Worker | None:
        """The next idle worker (None if the one at the head was not idle after all)."""
        worker = self.workers.get(self.idle.popleft())
        if worker is None or worker.job is not None or worker.xact is not None:
            return None
        return worker

    def _expire_queued(self, now: float) -> None:
        """Fail the jobs that waited too long for a worker: every worker is held by a transaction
        that may itself wait for the job's transaction."""
        limit = self.config.deadlock_timeout_s
        while self.queue and limit > 0:
            msg = self.queue[0]
            key = (msg[1], msg[2], msg[3])
            if now - self.queued_at.get(key, now) < limit:
                break
            self.queue.popleft()
            self.queued_at.pop(key, None)
            self._answer(msg[1], msg[2], [Kind.ERROR, msg[1], msg[2], msg[3], None, _error(
                "40P01", f'possible deadlock across nodes: no shoal worker of node "{self.me}" '
                f"became free within shoal.deadlock_timeout ({limit:g} s)",
                "Every worker was held by an open transaction; the transaction was aborted so "
                "that the others can go on. Retry it, or raise shoal.workers.")])

    def _start(self, worker: Worker, msg: list) -> None:
        key = (msg[1], msg[2], msg[3])
        worker.job = key
        if msg[4] is not None:
            worker.xact = msg[4]
            self.xact_worker[msg[4]] = worker.ident
        self.running[key] = worker.ident
        worker.out.append(msg)

    def _fail_job(self, msg: list, why: str) -> None:
        self._answer(msg[1], msg[2], [Kind.ERROR, msg[1], msg[2], msg[3], None, _error("08006", why)])

    # -- periodic work ----------------------------------------------------------------------------

    def _periodic(self, now: float) -> None:
        if now >= self._next_refresh:
            self._next_refresh = now + REFRESH_NODES_S
            self._refresh_nodes()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + HEARTBEAT_S
            self._pings += 1
            for channel in self.channels.values():
                channel.out.append([Kind.HEARTBEAT, self.me, b"", 0, None, b""])
                if channel.state == "up":  # its round trip is a latency sample (see _from_peer)
                    channel.out.append([Kind.PING, self.me, b"", -self._pings, None, b""])
                    self.outbound[(b"", -self._pings)] = Outbound(channel.name, now)
        if self.config.secret is not None and self.me:
            for channel in self.channels.values():
                if channel.link is None and self.me < channel.name and now >= channel.next_attempt:
                    self._connect(channel, now)
        for link in [link for link in self.links.values() if link.expired(now)]:
            log.warning("dropped a peer connection that did not finish its handshake")
            self._link_lost(link)
        if now >= self._next_liveness:
            self._next_liveness = now + LIVENESS_S
            self._check_peers(now)
            self._expire_queued(now)
            if self.ping_runs:
                self._end_ping_runs(lambda run: run.stalled(now), _error(
                    "08006", f"no answer to a ping for {STALL_S:g} s", "The ping run was aborted."))
        if now >= self._next_resolve and self.me and self.workers:
            self._next_resolve = now + RESOLVE_S
            self._resolve_in_doubt()

    def _resolve_in_doubt(self) -> None:
        """Have a worker settle this node's prepared transactions whose coordinator has decided
        (after a crash, or a lost COMMIT PREPARED); nobody waits for the answer."""
        self._resolves += 1
        self._serve([Kind.CONTROL, self.me, b"", -self._resolves, None,
                     protocol.encode_job("resolve", min_age_s=IN_DOUBT_AFTER_S,
                                         purge=self._resolves % PURGE_EVERY == 0)])

    def _channel(self, node: str) -> Channel | None:
        channel = self.channels.get(node)
        if channel is None:
            self._refresh_nodes(force=True)
            channel = self.channels.get(node)
        return channel

    def _refresh_nodes(self, force: bool = False) -> None:
        try:
            rows = self._read_catalog(NODES_SQL)
        except Exception as exc:  # the extension may not be created yet
            if force:
                log.debug("cannot read shoal.node: %s", exc)
            return
        wanted = {}
        for name, conninfo, mux_port in rows:
            if name == self.me:
                continue
            try:
                wanted[name] = node_address(name, conninfo, mux_port)
            except (ValueError, TypeError) as exc:
                log.warning("node %s has an unusable address: %s", name, exc)
        for name in set(self.channels) - set(wanted):
            channel = self.channels.pop(name)
            self._peer_lost(channel, "was removed from shoal.nodes")
            self._close_channel(channel)
        for name, address in wanted.items():
            channel = self.channels.get(name)
            if channel is not None and channel.address == address:
                continue
            if channel is not None:
                self._close_channel(channel)
            self.channels[name] = Channel(address)

    def _check_peers(self, now: float) -> None:
        for channel in self.channels.values():
            if channel.silent_too_long(now):
                channel.state = "down"
                log.warning("channel to %s is down (silent for %.1f s)",
                            channel.name, now - channel.last_heard)
                self._peer_lost(channel, "is unreachable")
                self._close_channel(channel)  # the backends it was lent to must stop writing to it

    def _peer_lost(self, channel: Channel, why: str) -> None:
        """Fail our requests waiting on the peer, and stop the work it asked of us."""
        for (client, req), pending in list(self.outbound.items()):
            if pending.node == channel.name:
                del self.outbound[(client, req)]
                self._to_client(client, [Kind.ERROR, channel.name, b"", req, None,
                                         _error("08006", f'node "{channel.name}" {why}',
                                                "The statement was aborted; retry once the node is back.")])
        for key in [k for k in self.running if k[0] == channel.name]:
            self._cancel_running(key)
        # blocks the peer's transactions hold here, between two of their statements: the peer's
        # backends may be gone with it, and their locks must not outlive them
        prefix = f"{channel.name}:"
        for worker in self.workers.values():
            if worker.job is None and worker.xact is not None and worker.xact.startswith(prefix):
                worker.out.append([Kind.QUERY, self.me, b"", 0, worker.xact, protocol.encode_job("rollback")])
        self._drop_jobs_of(lambda msg: msg[1] == channel.name)
        self._end_ping_runs(lambda run: run.node == channel.name,
                            _error("08006", f'node "{channel.name}" {why}', "The ping run was aborted."))
        channel.out.clear()

    def _cancel_running(self, key: JobKey) -> None:
        ident = self.running.get(key)
        worker = self.workers.get(ident) if ident else None
        if worker is None:
            return
        worker.out.append([Kind.CANCEL, key[0], key[1], key[2], None, b""])
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGINT)
        if worker.xact is not None:  # its transaction cannot finish: abort it afterwards
            worker.out.append([Kind.QUERY, self.me, b"", 0, worker.xact, protocol.encode_job("rollback")])

    def _drop_jobs_of(self, match) -> None:
        for queue in (self.queue, self.control, *self.xact_queue.values()):
            for msg in [m for m in queue if match(m)]:
                queue.remove(msg)
                self.queued_at.pop((msg[1], msg[2], msg[3]), None)

    def _disconnected(self, conn: framing.Connection) -> None:
        """A backend or a worker closed its connection (it exited, or crashed)."""
        self.poller.unregister(conn.fd)
        del self.conns[conn.fd]
        del self.by_ident[conn.ident]
        conn.close()
        worker = self.workers.pop(conn.ident, None)
        if worker is not None:
            self._worker_gone(worker)
        else:
            self._client_gone(conn.ident)

    def _worker_gone(self, worker: Worker) -> None:
        log.warning("worker pid %d is gone", worker.pid)
        if worker.job is not None:
            self.running.pop(worker.job, None)
            origin, client, req = worker.job
            self._answer(origin, client, [Kind.ERROR, origin, client, req, None,
                                          _error("08006", "the shoal worker running this request died")])
        if worker.xact is not None:
            self.xact_worker.pop(worker.xact, None)

    def _client_gone(self, client: bytes) -> None:
        """Cancel what an exited backend left running, here and on other nodes."""
        for (c, req), pending in list(self.outbound.items()):
            if c == client:
                del self.outbound[(c, req)]
                channel = self.channels.get(pending.node)
                if channel is not None:
                    channel.out.append([Kind.CANCEL, self.me, client, req, None, b""])
        for key in [k for k in self.running if k[0] == self.me and k[1] == client]:
            self._cancel_running(key)
        for channel in self.channels.values():  # and what it wrote into lent channels
            link = channel.link
            if link is not None and client in link.lent:
                link.lent.discard(client)
                channel.out.append([Kind.CANCEL, self.me, client, 0, None, b""])
        for node, xact in self.client_xacts.pop(client, ()):
            abort = [Kind.QUERY, self.me, client, 0, xact, protocol.encode_job("rollback")]
            if node == self.me:
                self._serve(abort)
            elif node in self.channels:
                self.channels[node].out.append(abort)
        self._end_ping_runs(lambda run: run.client == client, None)
        self.client_out.pop(client, None)

    # -- output -----------------------------------------------------------------------------------

    def _to_client(self, client: bytes, msg: list) -> None:
        self.client_out.setdefault(client, []).append(msg)

    def _flush(self) -> None:
        # peers first: a backend that is lent a channel below must find our frames in it already
        for channel in self.channels.values():
            link = channel.link
            if link is not None and link.lock_wait and not link.flush() and not link.lock_wait:
                self.poller.modify(link.fd, IN | OUT)  # got the lock; the rest when it drains
            if not channel.out:
                continue
            if link is None or not link.up:
                if not channel.accepts_requests(time.monotonic()):
                    batch, channel.out = channel.out, []
                    self._undeliverable(channel, batch)
                continue  # still connecting: it leaves once the link is up
            batch, channel.out = channel.out, []
            frame = protocol.pack(batch)
            link.send(frame)
            if link.out and not link.lock_wait:
                self.poller.modify(link.fd, IN | OUT)
            channel.stats.msgs_out += len(batch)
            channel.stats.bytes_out += len(frame)
        for worker in self.workers.values():
            if worker.out:
                self._send_local(worker.ident, worker.out)
                worker.out = []
        for client, messages in self.client_out.items():
            self._send_local(client, messages)
        self.client_out.clear()
        if self.lending:
            self._hand_out()

    def _undeliverable(self, channel: Channel, batch: list) -> None:
        """The peer is not connected: our backends' requests in the batch fail now."""
        for msg in batch:
            if msg[0] in _REQUESTS and msg[1] == self.me:
                self.outbound.pop((msg[2], msg[3]), None)
                self._send_local(msg[2], [[Kind.ERROR, channel.name, b"", msg[3], None,
                                           _error("08006", f'node "{channel.name}" is unreachable',
                                                  "Check that the node runs (shoal status).")]])

    def _send_local(self, ident: bytes, messages: list) -> None:
        conn = self.by_ident.get(ident)
        if conn is None:
            return  # the process is gone
        if not conn.write(protocol.pack(messages)):
            self.poller.modify(conn.fd, IN | OUT)

    # -- observability ----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot(
            node=self.me,
            peers={name: (c.state, c.stats) for name, c in self.channels.items()},
            jobs_in_flight=len(self.running),
            jobs_queued=len(self.queue) + len(self.control) + sum(len(q) for q in self.xact_queue.values()),
            workers_busy=sum(1 for w in self.workers.values() if w.job is not None),
            workers=len(self.workers),
            malformed=self.malformed,
        )

    def _serve_metrics(self) -> None:
        try:
            conn, _ = self.metrics.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(0.5)
            with contextlib.suppress(OSError):
                conn.recv(4096)
                body = self.snapshot().to_prometheus().encode()
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def main() -> None:
    """The background worker's entry point (called by the extension)."""
    import _shoal_pg

    from shoal.multiplexer import config as mux_config

    logging.basicConfig(level=logging.INFO, format="shoal multiplexer: %(message)s")

    def read_catalog(sql: str) -> list[tuple]:
        chunks: list[bytes] = []
        _shoal_pg.execute(sql, [], [], False, None, chunks.append)
        return protocol.decode_text_tuples(b"".join(chunks))

    mux = Multiplexer(mux_config.load(_shoal_pg.setting), read_catalog, _shoal_pg.check_interrupts)
    heap.settle()
    try:
        mux.run()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(mux.config.ipc_path)
        mux.listener.close()
        if mux.peer_listener is not None:
            mux.peer_listener.close()
