"""Connections from a backend to the other nodes, and their transactions.

One connection per node per backend, shared by every table on that node, so that all the remote
work of a local transaction happens in one remote transaction.  The remote transaction opens at
first use (REPEATABLE READ, or SERIALIZABLE when the local one is, so that every scan of a query
sees one remote snapshot, as in postgres_fdw) and its savepoints follow the local ones.  It
commits in the local pre-commit and rolls back with the local abort.

The connection is libpq through psycopg; the multiplexer replaces this transport.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from typing import Any

import psycopg

from shoal.fdw import backend

# Settings under which the SQL we send is read back exactly as it was deparsed here.
_SESSION_OPTIONS = (
    "-c search_path=pg_catalog -c datestyle=ISO -c intervalstyle=postgres "
    "-c extra_float_digits=3 -c standard_conforming_strings=on -c client_encoding=UTF8"
)

_peers: dict[str, Peer] = {}


class PeerError(Exception):
    """A node cannot be reached or is unknown."""

    sqlstate = "08001"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def peer(node: str) -> Peer:
    """The connection of this backend to ``node``, opened on first use.

    A connection lost while it held a remote transaction is not replaced until the local
    transaction ends: the work done there is gone, so the transaction must not commit.
    """
    existing = _peers.get(node)
    if existing is not None:
        if not existing.broken:
            return existing
        if existing.lost_transaction:
            raise PeerError(
                f'the connection to node "{node}" was lost during this transaction',
                hint="The transaction cannot commit; roll it back and retry.",
            )
    rows = backend.query("SELECT conninfo FROM shoal.nodes WHERE name = $1", node)
    if not rows:
        raise PeerError(f'node "{node}" is not in shoal.nodes', hint="Add it with shoal.add_node().")
    created = Peer(node, rows[0][0])
    _peers[node] = created
    return created


def existing_peer(node: str) -> Peer | None:
    """The connection to ``node`` if this backend has one (even a lost one)."""
    return _peers.get(node)


class Peer:
    """One node's connection and the state of its remote transaction."""

    def __init__(self, node: str, conninfo: str) -> None:
        self.node = node
        try:
            self.conn = psycopg.connect(
                conninfo, autocommit=True, application_name="shoal", options=_SESSION_OPTIONS
            )
        except psycopg.OperationalError as exc:
            raise PeerError(f'cannot connect to node "{node}": {exc}'.strip()) from exc
        self.depth = 0  # 0: no remote transaction; 1: open; n > 1: savepoints s2..sn exist
        self.broken = False
        self.lost_transaction = False
        self._active: RemoteStream | None = None

    # -- transactions -------------------------------------------------------------------------

    def ensure(self, serializable: bool) -> None:
        """Open the remote transaction and the savepoints the local one has now."""
        level = backend.nest_level()
        if self.depth == 0:
            isolation = "SERIALIZABLE" if serializable else "REPEATABLE READ"
            self.execute(f"START TRANSACTION ISOLATION LEVEL {isolation}")
            self.depth = 1
        while self.depth < level:
            self.depth += 1
            self.execute(f"SAVEPOINT s{self.depth}")

    def commit(self) -> None:
        if self.lost_transaction:
            raise PeerError(f'the connection to node "{self.node}" was lost during this transaction')
        if self.depth:
            self.settle()
            self.depth = 0
            self.execute("COMMIT")

    def rollback(self) -> None:
        """Abort the remote transaction; a lost connection is forgotten with it."""
        if self.broken:
            self.lost_transaction = False
            self.close()
            return
        if self.depth == 0:
            return
        self.depth = 0
        self._active = None
        try:
            self.execute("ROLLBACK")
        except psycopg.Error:
            self.close()
            self.lost_transaction = False
            _peers.pop(self.node, None)

    def release(self, level: int) -> None:
        if self.depth >= level:
            self.settle()
            self.execute(f"RELEASE SAVEPOINT s{level}")
            self.depth = level - 1

    def rollback_to(self, level: int) -> None:
        if self.depth >= level:
            self.settle(discard=True)
            self.execute(f"ROLLBACK TO SAVEPOINT s{level}")
            self.execute(f"RELEASE SAVEPOINT s{level}")
            self.depth = level - 1

    # -- statements ---------------------------------------------------------------------------

    def execute(self, sql: str, params: Any = None) -> list[tuple]:
        """Run one statement; rows if it returns any."""
        self.settle()
        with self._guard(), self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def stream(self, sql: str) -> RemoteStream:
        """Start ``COPY (sql) TO STDOUT (FORMAT binary)``: the request leaves now."""
        self.settle()
        stream = RemoteStream(self, sql)
        self._active = stream
        return stream

    def settle(self, discard: bool = False) -> None:
        """Finish the stream that holds the connection: libpq runs one statement at a time."""
        active, self._active = self._active, None
        if active is not None:
            active.buffer_rest(discard)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        # A cancel or a lost connection leaves the session in an unknown state: start afresh.
        try:
            yield
        except psycopg.OperationalError as exc:
            self.close()
            raise PeerError(f'lost the connection to node "{self.node}": {exc}'.strip()) from exc
        except BaseException as exc:
            if not isinstance(exc, psycopg.Error):
                self.close()
            raise

    def close(self) -> None:
        """Drop the connection; if it held a transaction, remember that it was lost."""
        if self.depth > 0:
            self.lost_transaction = True
        self.broken = True
        self.depth = 0
        self._active = None
        with contextlib.suppress(Exception):
            self.conn.close()
        if not self.lost_transaction and _peers.get(self.node) is self:
            del _peers[self.node]


class RemoteStream:
    """The binary COPY data of one remote scan, read as the executor pulls."""

    def __init__(self, peer: Peer, sql: str) -> None:
        self.peer = peer
        self._buffered: deque[bytes] | None = None
        self._done = False
        self._cursor = peer.conn.cursor()
        self._context = self._cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT binary)")
        with peer._guard():
            self._copy = self._context.__enter__()

    def __iter__(self) -> Iterator[bytes | memoryview]:
        while True:
            if self._buffered is not None:
                while self._buffered:
                    yield self._buffered.popleft()
                return
            if self._done:
                return
            with self.peer._guard():
                data = self._copy.read()
            if not data:
                self._finish()
                return
            yield data

    def buffer_rest(self, discard: bool = False) -> None:
        """Read what is left into memory (or drop it), freeing the connection for others."""
        if self._done:
            return
        rest: deque[bytes] = deque()
        with self.peer._guard():
            while data := self._copy.read():
                if not discard:
                    rest.append(bytes(data))
        self._finish()
        self._buffered = rest

    def close(self) -> None:
        """The scan ended: drain the rest so that the remote transaction stays usable."""
        if not self._done and not self.peer.broken:
            self.buffer_rest(discard=True)
        if self.peer._active is self:
            self.peer._active = None

    def _finish(self) -> None:
        self._done = True
        with self.peer._guard():
            self._context.__exit__(None, None, None)
            self._cursor.close()
        if self.peer._active is self:
            self.peer._active = None
