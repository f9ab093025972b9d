"""A worker: runs the jobs its node's multiplexer hands it, against this node.

Workers are background processes connected to the node's database.  Any worker runs any job; a
job that opens a transaction block keeps its worker until the block ends (the multiplexer routes
the transaction's later jobs to it).  Results leave as binary tuple data in chunks, at most
INITIAL_CREDIT chunks ahead of what the requesting backend has consumed, so a huge result never
piles up in memory anywhere on the way.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
from collections import deque
from typing import Any

from shoal.multiplexer import config as mux_config
from shoal.multiplexer import framing, protocol
from shoal.multiplexer.protocol import Kind
from shoal.transactions import indoubt

log = logging.getLogger("shoal.worker")

POLL_MS = 200
_BLOCK_OPS = frozenset(("commit", "prepare", "savepoint", "release", "rollback_to"))


class Cancelled(Exception):
    """The backend that asked cancelled the request (or is gone)."""


class FailedBlock(Exception):
    """COMMIT or PREPARE of a block that had failed: PostgreSQL rolled it back instead."""


class LostBlock(Exception):
    """A job of a transaction whose block here is gone: its worker died, or this node rolled it
    back when the channel to the transaction's node went down.  Run outside a block, a write
    would commit on its own and a read would take a snapshot of its own."""


class MultiplexerGone(Exception):
    """The node's multiplexer closed the connection (it is restarting)."""


class JobRunner:
    def __init__(self, sock: socket.socket, pg: Any) -> None:
        self.sock = sock
        self.poll = select.poll()
        self.poll.register(sock.fileno(), select.POLLIN)
        self.reader = framing.FrameReader()
        self.pg = pg  # the extension's _shoal_pg module
        self.backlog: deque[list] = deque()
        self.job: tuple[str, bytes, int] | None = None
        self.credit = 0
        self.tail: bytes | None = None  # a last, short chunk: it leaves with DONE, in one frame
        self.gate: bool | None = None  # this node's commit gate, held for a transaction: write mode?

    def run(self) -> None:
        while True:
            while self.backlog:
                self.handle(self.backlog.popleft())
            try:
                for msg in self._receive(POLL_MS):
                    self.handle(msg)
                self.pg.check_interrupts()
            except self.pg.QueryCanceled as exc:
                if str(exc).startswith("terminating"):
                    raise
                # a cancel meant for a job that has already ended: nothing to stop
                self.pg.clear_cancel()

    def handle(self, msg: list) -> None:
        kind = msg[0]
        if kind in (Kind.QUERY, Kind.CONTROL):
            self.execute(msg)
        # ACK or CANCEL of a job that has already ended: nothing to do

    def execute(self, msg: list) -> None:
        _, origin, client, req, xact, payload = msg
        self.job = (origin, client, req)
        self.credit = protocol.INITIAL_CREDIT
        self.tail = None
        try:
            job = protocol.decode_job(payload)
            tag, rows = self._run(job)
            reply = [Kind.DONE, protocol.encode_done(tag, rows)]
        except self.pg.JobError as exc:
            reply = [Kind.ERROR, _job_error(exc, self.pg)]
        except Cancelled:
            reply = [Kind.ERROR, protocol.encode_error("57014", "canceling statement due to user request")]
        except LostBlock:
            reply = [Kind.ERROR, protocol.encode_error(
                "40000", f"the transaction's work on node \"{self.pg.setting('shoal.node_name') or ''}\" "
                "was lost and rolled back (the worker holding it ended, or the nodes lost touch)",
                hint="Retry the transaction.")]
        except FailedBlock:
            reply = [Kind.ERROR, protocol.encode_error(
                "40000", "the remote transaction had failed and was rolled back",
                hint="An earlier statement of this transaction failed on that node.")]
        except self.pg.QueryCanceled as exc:
            if str(exc).startswith("terminating"):
                self._reply(Kind.ERROR, origin, client, req, None,
                            protocol.encode_error("57P01", "the shoal worker is shutting down"))
                raise
            reply = [Kind.ERROR, protocol.encode_error("57014", "canceling statement due to user request")]
        except Exception as exc:  # a bug here must not take the worker down
            log.exception("job failed")
            reply = [Kind.ERROR, protocol.encode_error("XX000", f"shoal worker: {type(exc).__name__}: {exc}")]
        finally:
            self.job = None
        # a transaction keeps its worker while it has a block, or the node's gate, here
        held = xact if self.pg.in_block() or self.gate is not None else None
        self._reply(reply[0], origin, client, req, held, reply[1])

    def _run(self, job: dict) -> tuple[str, int]:
        op = job["op"]
        pg = self.pg
        # a transaction's first job here opens its block (and savepoints) on the way; its later
        # jobs say they expect it (in_block), as do the ops that only make sense in one
        if "begin" in job:
            pg.begin(job["begin"], False)
        elif (job.get("in_block") or op in _BLOCK_OPS) and not pg.in_block():
            raise LostBlock()
        for name in job.get("savepoints", ()):
            pg.savepoint(name)
        if op == "execute":
            return pg.execute(
                job["sql"], job.get("types", []), job.get("params", []), job.get("binary", False),
                job.get("role"), self.sink, protocol.CHUNK_BYTES, job.get("max_rows", 0),
                bool(job.get("cache", True)), bool(job.get("held_snapshot", False)),
            )
        if op == "begin":
            pg.begin(job.get("isolation", "read committed"), job.get("read_only", False))
            return "BEGIN", 0
        if op == "commit":
            self._release_gate()
            if not pg.commit(job.get("role")):
                raise FailedBlock()
            return "COMMIT", 0
        if op == "rollback":
            try:
                pg.rollback()
            finally:
                self._release_gate()
            return "ROLLBACK", 0
        if op == "cut":
            return self._cut(job)
        if op == "release_gate":
            self._release_gate()
            return "RELEASED", 0
        if op == "uncut":  # the statement that read the cut in this transaction's block is over
            pg.drop_snapshot()
            if self.gate is False:
                self._release_gate()
            return "UNCUT", 0
        if op in ("savepoint", "release", "rollback_to"):
            getattr(pg, op)(job["name"])
            return op.upper(), 0
        if op == "prepare":
            if job.get("gate"):  # before the decision, until the commit here (see snapshots)
                pg.gate(True, True, True)
                self.gate = True
            try:
                if not pg.prepare(job["gid"], job.get("role")):
                    raise FailedBlock()
            except BaseException:
                self._release_gate()
                raise
            return "PREPARE TRANSACTION", 0
        if op in ("commit_prepared", "rollback_prepared"):
            try:
                getattr(pg, op)(job["gid"])
            finally:
                self._release_gate()
            return op.upper(), 0
        if op == "decision":
            return indoubt.local_decision(pg, job["gid"], int(job["full_xid"])), 0
        if op in ("in_doubt", "resolve"):
            if job.get("purge"):
                indoubt.purge_decisions(pg)
            return self._in_doubt(op == "resolve", float(job.get("min_age_s", 0)))
        if op == "prepared":
            rows = indoubt.prepared_by(pg, job["coordinator"])
            if rows:
                self.sink(protocol.encode_text_tuples(rows))
            return "PREPARED", len(rows)
        raise ValueError(f"unknown job operation {op!r}")

    def _cut(self, job: dict) -> tuple[str, int]:
        """Take a snapshot under this node's gate (read mode), and keep the gate until
        release_gate: in a block opened for it, or (in_block) for the next statements of the
        transaction's own block.  BUSY, and nothing taken, if a distributed commit holds the gate;
        IN_DOUBT if a transaction prepared here lost its hold on it (it is settled soon)."""
        pg = self.pg
        own_block = not job.get("in_block")
        if own_block:
            pg.begin(job.get("isolation", "repeatable read"), job.get("read_only", False))
        if not pg.gate(False, False, True):
            self._give_back(own_block)
            return "BUSY", 0
        self.gate = False
        try:  # in its own block, the snapshot is taken by this statement
            if not own_block:
                pg.hold_snapshot()
            _, in_doubt = pg.execute(indoubt.PREPARED_HERE_SQL, [], [], False, None, _discard)
        except BaseException:
            self._release_gate()
            self._give_back(own_block)
            raise
        if in_doubt:
            self._release_gate()
            self._give_back(own_block)
            return "IN_DOUBT", 0
        return "CUT", 0

    def _give_back(self, own_block: bool) -> None:
        if own_block:
            self.pg.rollback()
        else:
            self.pg.drop_snapshot()

    def _release_gate(self) -> None:
        if self.gate is not None:
            write, self.gate = self.gate, None
            self.pg.gate_release(write, True)

    def _in_doubt(self, settle: bool, min_age_s: float) -> tuple[str, int]:
        """This node's prepared transactions left in doubt (settled if asked), as text rows."""
        node = self.pg.setting("shoal.node_name") or ""
        entries = indoubt.survey(self.pg, settle, min_age_s)
        for entry in entries:
            if settle and entry.action != "left":
                log.warning("settled in-doubt transaction %s: %s (coordinator's decision: %s)",
                            entry.gid, entry.action, entry.decision)
        rows = indoubt.rows(entries, node)
        if rows:
            self.sink(protocol.encode_text_tuples(rows))
        return "IN DOUBT", len(rows)

    # -- streaming results ------------------------------------------------------------------------

    def sink(self, chunk: bytes) -> None:
        """Called by the executor with each chunk of result tuples."""
        if self.tail is not None:
            self._send_data(self.tail)
            self.tail = None
        if len(chunk) < protocol.CHUNK_BYTES:
            self.tail = chunk
            return
        self._send_data(chunk)

    def _send_data(self, chunk: bytes) -> None:
        while self.credit <= 0:
            self._wait_for_credit()
        self.credit -= 1
        origin, client, req = self.job
        self._send([[Kind.DATA, origin, client, req, None, chunk]])

    def _send(self, messages: list) -> None:
        framing.send_blocking(self.sock, protocol.pack(messages))

    def _receive(self, timeout_ms: int) -> list:
        """Messages that arrive within the timeout (none if nothing does)."""
        if not self.poll.poll(timeout_ms):
            return []
        data = self.sock.recv(framing.READ_BYTES)
        if not data:
            raise MultiplexerGone()
        return [msg for frame in self.reader.feed(data) for msg in protocol.unpack(frame)]

    def _wait_for_credit(self) -> None:
        messages = self._receive(POLL_MS)
        if not messages:
            self.pg.check_interrupts()
            return
        for msg in messages:
            kind, origin, client, req = msg[0], msg[1], msg[2], msg[3]
            if (origin, client, req) != self.job:
                if kind in (Kind.QUERY, Kind.CONTROL):
                    self.backlog.append(msg)
                continue
            if kind == Kind.ACK and isinstance(msg[5], int):
                self.credit += msg[5]
            elif kind == Kind.CANCEL:
                raise Cancelled()

    def _reply(self, kind: int, origin: str, client: bytes, req: int, xact: str | None,
               payload: bytes) -> None:
        messages = []
        if self.tail is not None and kind == Kind.DONE:
            messages.append([Kind.DATA, origin, client, req, None, self.tail])
        self.tail = None
        messages.append([kind, origin, client, req, xact, payload])
        self._send(messages)


def _discard(chunk: bytes) -> None:
    pass


def _job_error(exc: Any, pg: Any) -> bytes:
    """A failed job's error for the node that asked.  A lock wait that outlived the worker's
    lock_timeout (shoal.deadlock_timeout) is reported as the deadlock across nodes it probably is."""
    if exc.sqlstate == "55P03" and "lock timeout" in exc.message:
        return protocol.encode_error(
            "40P01", "possible deadlock across nodes: a lock wait on node "
            f'"{pg.setting("shoal.node_name")}" exceeded shoal.deadlock_timeout '
            f'({pg.setting("shoal.deadlock_timeout")})',
            exc.detail, "No single node sees a wait cycle that crosses nodes, so shoal aborts a "
            "transaction that waits this long. Retry it.")
    return protocol.encode_error(exc.sqlstate, exc.message, exc.detail, exc.hint)


def _bound_lock_waits(pg: Any) -> None:
    """Lock waits of remote work end after shoal.deadlock_timeout (see _job_error)."""
    timeout = pg.setting("shoal.deadlock_timeout") or "0"
    if timeout not in ("0", "0ms"):
        pg.execute("SELECT pg_catalog.set_config('lock_timeout', $1, false)", [25], [timeout],
                   False, None, _discard)


def main(index: int = 0) -> None:
    """The background worker's entry point (called by the extension)."""
    import _shoal_pg

    logging.basicConfig(level=logging.INFO, format=f"shoal worker {index}: %(message)s")
    config = mux_config.load(_shoal_pg.setting)
    sock = _connect(config.ipc_path, _shoal_pg)
    runner = JobRunner(sock, _shoal_pg)
    try:
        _bound_lock_waits(_shoal_pg)
    except _shoal_pg.JobError as exc:  # the database may not be ready: waits stay unbounded
        log.warning("cannot bound lock waits: %s", exc.message)
    runner._send([protocol.message(Kind.HELLO)])
    try:
        runner.run()
    except MultiplexerGone:
        log.info("the multiplexer restarted; reconnecting")
    finally:
        with contextlib.suppress(Exception):
            sock.close()


def _connect(path: str, pg: Any) -> socket.socket:
    """Connect to the multiplexer, waiting for it while it starts (workers may start first)."""
    while True:
        try:
            return framing.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            pg.wait(timeout=0.2)
