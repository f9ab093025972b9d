"""A backend's work on other nodes, through its node's multiplexer, and its transactions there.

A read outside a remote transaction runs on any worker of the other node, in a transaction of
its own.  Once the local transaction writes on a node it holds a transaction block there, on one
worker, which then serves the transaction's reads of that node too (they see its writes).
Savepoints follow the local ones; the blocks roll back with the local abort.

At the local commit, a transaction that wrote on one other node only (and not locally) commits it
in one phase, before the local commit.  Otherwise every node it wrote on is prepared (two-phase
commit, ``PREPARE TRANSACTION 'shoal:<coordinator>:<xid>:<nonce>'``) before the local commit and
committed after it, so that the nodes commit all or none.  The local transaction records the gid
before it commits: that row is the decision, which a node left with a prepared part by a crash asks
the coordinator for (shoal.transactions.indoubt).

Once the transaction has work on another node, its lock waits here are bounded by
shoal.deadlock_timeout (as are the workers'): no node alone sees a wait cycle across nodes.

With shoal.consistent_snapshots, a two-phase commit also holds every node's gate in write mode from
before the decision until its commit there (shoal.transactions.snapshots): the worker that prepared
keeps it, and the second phase goes to that worker.  A statement's reads that belong to a cut go
to the cut's block on each node, or to the transaction's own block, on the snapshot it holds for
the cut.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import FeatureNotSupported
from shoal.fdw import backend
from shoal.multiplexer import client as mux
from shoal.multiplexer.client import RemoteError, Stream
from shoal.multiplexer.protocol import encode_job
from shoal.transactions import indoubt, snapshots


@dataclass
class _LocalTransaction:
    _key: str | None = None
    depth: dict[str, int] = field(default_factory=dict)  # node -> remote nesting (1: block open)
    prepared: list[str] = field(default_factory=list)  # nodes holding the prepared transaction
    written: set[str] = field(default_factory=set)  # nodes written on (the others only read)
    gid: str = ""  # the prepared transaction's name, once there is one
    joined: bool = False  # hears of the local transaction's end (backend.join_transaction)

    @property
    def key(self) -> str:
        """The name of the transaction on other nodes, made when it first writes there (most
        transactions only read: they need none)."""
        if self._key is None:
            me = backend.setting("shoal.node_name") or "node"
            self._key = f"{me}:{uuid.uuid4().hex}"
        return self._key


_current: _LocalTransaction | None = None
STALL_S = 3.0


def _transaction() -> _LocalTransaction:
    global _current
    if _current is None:
        _current = _LocalTransaction()
    return _current


class _Participant:
    """What the extension's transaction callbacks call: the local transaction's remote part."""

    def begin(self, serializable: bool) -> None:
        pass  # a block takes the local transaction's level when it opens

    def pre_commit(self) -> None:
        pre_commit()

    def commit(self) -> None:
        finish(committed=True)

    def rollback(self) -> None:
        rollback()

    def sub_begin(self, level: int) -> None:
        pass

    def sub_commit(self, level: int) -> None:
        release(level)

    def sub_rollback(self, level: int) -> None:
        rollback_to(level)

    def pre_prepare(self, gid: str | None) -> None:
        raise FeatureNotSupported(
            "PREPARE TRANSACTION is not supported in a transaction that wrote on other shoal nodes")

    def prepare(self, gid: str | None) -> None:
        pass


_participant = _Participant()


def run(node: str, sql: str, types: list[int], params: list[str | None], write: bool,
        cache: bool = True) -> Stream:
    """Send one statement to ``node``; its result streams back (binary tuple data).  ``cache``:
    the worker keeps the statement's plan for the next time (not worth it for DDL)."""
    if backend.serializable():
        # each node's serializable checks see only its own part of the transaction: they could
        # not catch an anomaly across nodes, so shoal refuses rather than promise it
        raise FeatureNotSupported("cannot use serializable mode on other shoal nodes",
                                  hint="You can use REPEATABLE READ instead: it sees one cut of "
                                       "every node for the whole transaction.")
    client = mux.connect()
    xact = _transaction() if write or (_current is not None and node in _current.depth) else None
    key = None
    extra: dict[str, Any] = {} if cache else {"cache": False}  # the worker's default: keep the plan
    if xact is not None:
        if write:
            xact.written.add(node)
        if not xact.joined:
            _join(xact)
        extra.update(_enter(xact, node))
        key = xact.key
        if not write and (cut := backend.current_cut()) and snapshots.holds(cut, node):
            extra["held_snapshot"] = True  # the statement reads a cut: on its snapshot there
    elif cut := backend.current_cut():
        key = snapshots.block(cut, node)  # the statement reads one cut: in its block on that node
        if key is not None:
            extra["in_block"] = True
    job = encode_job("execute", sql=sql, types=types, params=params, binary=False,
                     role=backend.current_role(), **extra)
    return client.request(node, job, key)


def current() -> _LocalTransaction | None:
    """The local transaction's remote part, if it has one."""
    return _current


def transaction_key() -> str:
    """The local transaction's name on other nodes (made now if it has none)."""
    return _transaction().key


def adopt_blocks(nodes: list[str]) -> None:
    """Blocks opened on ``nodes`` under the transaction's key (a REPEATABLE READ transaction's
    cut) are its own from now on: its reads and writes there go to them, and they end with it."""
    xact = _transaction()
    if not xact.joined:
        _join(xact)
    for node in nodes:
        xact.depth.setdefault(node, 1)


def _join(xact: _LocalTransaction) -> None:
    """The transaction opens its first block on another node: it hears of the local end, its lock
    waits are bounded, and it takes one of this node's slots (backend.admit)."""
    xact.joined = True
    backend.join_transaction(_participant)
    # a slot wait needs no bound: any wait cycle through it also passes through a bounded wait
    # (a worker's, or a guarded one here); but a transaction holding locks here must not wait
    # for slot holders that may be waiting for it
    backend.admit(_slots(), not backend.wrote_locally())
    backend.guard_lock_waits()


_slots_cache: tuple[float, int] = (0.0, 1)
SLOTS_REFRESH_S = 60.0


def _slots() -> int:
    """How many transactions of this node may hold blocks elsewhere at once: so many that all
    nodes together leave a free worker in every pool (shoal.workers - 1 for the transactions of
    the other nodes, one kept for COMMIT PREPARED)."""
    global _slots_cache
    now = time.monotonic()
    if now - _slots_cache[0] > SLOTS_REFRESH_S:
        workers = int(backend.setting("shoal.workers") or 1)
        peers = max(1, backend.query("SELECT count(*) - 1 FROM shoal.nodes")[0][0])
        _slots_cache = (now, max(1, (workers - 1) // peers))
    return _slots_cache[1]


def _enter(xact: _LocalTransaction, node: str) -> dict[str, Any]:
    """The fields that open the block on ``node`` and the savepoints the local transaction has
    now, for the job about to go there: they travel with it, one message and one answer."""
    depth = xact.depth.get(node, 0)
    # a job for a block that is already open says so: should the block have been lost on the
    # way (its worker died), the job fails there rather than run outside any transaction
    fields: dict[str, Any] = {} if depth == 0 else {"in_block": True}
    if depth == 0:
        # the block has the local transaction's level: in READ COMMITTED each statement there
        # takes a new snapshot, and an UPDATE that meets a row changed since re-checks the newest
        # version, as PostgreSQL does here, where REPEATABLE READ would fail with a serialization
        # error (hot rows under concurrent updates)
        level = backend.setting("transaction_isolation")
        fields["begin"] = level if level in ("repeatable read", "serializable") else "read committed"
        depth = 1
    level = backend.nest_level()
    if depth < level:
        fields["savepoints"] = [f"s{d}" for d in range(depth + 1, level + 1)]
        depth = level
    xact.depth[node] = depth
    return fields


def _control(xact: _LocalTransaction, nodes: list[str], op: str, done: list[str] | None = None,
             **fields: Any) -> None:
    """Run a control job on several nodes at once and wait for all; the nodes that succeeded go
    into ``done``, then the first error is raised."""
    client = mux.connect()
    streams = [(node, client.request(node, encode_job(op, **fields), xact.key, defer=True)) for node in nodes]
    first: RemoteError | None = None
    for node, stream in streams:
        try:
            stream.wait()
            if done is not None:
                done.append(node)
        except RemoteError as exc:
            first = first or exc
    if first is not None:
        raise first


def pre_commit() -> None:
    """The local pre-commit: commit the one node written on, or prepare all of them."""
    global _current
    xact = _current
    if xact is None or not xact.depth:
        _current = None
        return
    nodes = [node for node in xact.depth if node in xact.written]
    read_only = [node for node in xact.depth if node not in xact.written]
    if read_only:  # blocks that only read (a REPEATABLE READ cut): nothing to commit there
        _control(xact, read_only, "rollback")
        for node in read_only:
            del xact.depth[node]
    if not nodes:
        _current = None
        return
    one_phase = len(nodes) == 1 and not backend.wrote_locally()
    if one_phase or backend.setting("shoal.two_phase_commit") == "off":
        _current = None
        for node in nodes:  # one by one: a failure leaves the others as they are
            _control(xact, [node], "commit", role=backend.current_role())
        return
    # two phases: a node that cannot prepare aborts everything (rollback() undoes the others);
    # the name carries the local transaction id, whose commit is the decision
    me = backend.setting("shoal.node_name") or "node"
    xact.gid = indoubt.gid(me, backend.top_transaction_id())
    indoubt.record_decision(xact.gid)
    gate = backend.setting("shoal.consistent_snapshots") != "off"
    _control(xact, nodes, "prepare", done=xact.prepared, gid=xact.gid, role=backend.current_role(),
             gate=gate)
    if gate:  # held until the local commit is visible (a transaction lock)
        backend.gate(True, True, False)
    _crash_point("after_prepare")


def _crash_point(step: str) -> None:
    """Tests of recovery make the coordinator die at a chosen step (shoal.crash_point), or stall
    there for a few seconds (``stall_<step>``) while they kill another node."""
    point = backend.setting("shoal.crash_point")
    if point == step:
        backend.crash()
    elif point == f"stall_{step}":
        deadline = time.monotonic() + STALL_S
        while time.monotonic() < deadline:
            backend.wait(timeout=deadline - time.monotonic())


def finish(committed: bool) -> None:
    """After the local commit: commit the prepared transactions (errors only logged: the
    decision is taken, and a node that missed it resolves it later)."""
    global _current
    xact, _current = _current, None
    if xact is None or not xact.prepared:
        return
    if committed:
        _crash_point("after_local_commit")
    client = mux.connect()
    op = "commit_prepared" if committed else "rollback_prepared"
    # to the worker that prepared, which holds the node's gate until then
    streams = [(node, client.request(node, encode_job(op, gid=xact.gid), xact.key, control=True, defer=True))
               for node in xact.prepared]
    for node, stream in streams:
        try:
            stream.wait()
        except (RemoteError, TimeoutError) as exc:
            backend.log("warning", f"shoal: {op} of {xact.gid} on node {node} failed: {exc} "
                        "(the node settles it itself; see shoal.in_doubt)")


def rollback() -> None:
    """Roll back every node this transaction wrote on (the local abort); never raises."""
    global _current
    xact = _current
    if xact is None or not xact.depth:
        _current = None
        return
    if xact.prepared:
        finish(committed=False)
    _current = None
    unprepared = [node for node in xact.depth if node not in xact.prepared]
    try:
        _control(xact, unprepared, "rollback")
    except (RemoteError, TimeoutError):
        pass  # a node that cannot roll back has lost the block already (its worker aborted it)


def release(level: int) -> None:
    """The local savepoint at ``level`` was released."""
    _end_savepoint(level, "release")


def rollback_to(level: int) -> None:
    """The local transaction rolled back to its savepoint at ``level``."""
    _end_savepoint(level, "rollback_to", also_release=True)


def _end_savepoint(level: int, op: str, also_release: bool = False) -> None:
    xact = _current
    if xact is None:
        return
    nodes = [node for node, depth in xact.depth.items() if depth >= level]
    if not nodes:
        return
    _control(xact, nodes, op, name=f"s{level}")
    if also_release:
        _control(xact, nodes, "release", name=f"s{level}")
    for node in nodes:
        xact.depth[node] = level - 1
