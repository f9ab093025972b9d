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

log = logging.getLogger("shoal.worker")

POLL_MS = 200


class Cancelled(Exception):
    """The backend that asked cancelled the request (or is gone)."""


class FailedBlock(Exception):
    """COMMIT or PREPARE of a block that had failed: PostgreSQL rolled it back instead."""


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
        if kind == Kind.QUERY:
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
            reply = [Kind.ERROR, protocol.encode_error(exc.sqlstate, exc.message, exc.detail, exc.hint)]
        except Cancelled:
            reply = [Kind.ERROR, protocol.encode_error("57014", "canceling statement due to user request")]
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
        held = xact if self.pg.in_block() else None
        self._reply(reply[0], origin, client, req, held, reply[1])

    def _run(self, job: dict) -> tuple[str, int]:
        op = job["op"]
        pg = self.pg
        if op == "execute":
            return pg.execute(
                job["sql"], job.get("types", []), job.get("params", []), job.get("binary", False),
                job.get("role"), self.sink, protocol.CHUNK_BYTES, job.get("max_rows", 0),
                bool(job.get("cache", True)),
            )
        if op == "begin":
            pg.begin(job.get("isolation", "read committed"), job.get("read_only", False))
            return "BEGIN", 0
        if op == "commit":
            if not pg.commit(job.get("role")):
                raise FailedBlock()
            return "COMMIT", 0
        if op == "rollback":
            pg.rollback()
            return "ROLLBACK", 0
        if op in ("savepoint", "release", "rollback_to"):
            getattr(pg, op)(job["name"])
            return op.upper(), 0
        if op == "prepare":
            if not pg.prepare(job["gid"], job.get("role")):
                raise FailedBlock()
            return "PREPARE TRANSACTION", 0
        if op in ("commit_prepared", "rollback_prepared"):
            getattr(pg, op)(job["gid"])
            return op.upper(), 0
        raise ValueError(f"unknown job operation {op!r}")

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
        self.sock.sendall(framing.encode(protocol.pack(messages)))

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
                if kind == Kind.QUERY:
                    self.backlog.append(msg)
                continue
            if kind == Kind.ACK and isinstance(msg[5], int):
                self.credit += msg[5]
            elif kind == Kind.CANCEL:
                raise Cancelled()

    def _reply(self, kind: Kind, origin: str, client: bytes, req: int, xact: str | None,
               payload: bytes) -> None:
        messages = []
        if self.tail is not None and kind == Kind.DONE:
            messages.append([Kind.DATA, origin, client, req, None, self.tail])
        self.tail = None
        messages.append([kind, origin, client, req, xact, payload])
        self._send(messages)


def main(index: int = 0) -> None:
    """The background worker's entry point (called by the extension)."""
    import _shoal_pg

    logging.basicConfig(level=logging.INFO, format=f"shoal worker {index}: %(message)s")
    config = mux_config.load(_shoal_pg.setting)
    sock = _connect(config.ipc_path, _shoal_pg)
    runner = JobRunner(sock, _shoal_pg)
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
