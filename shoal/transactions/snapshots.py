"""One cut across nodes: reads that span nodes never see part of a distributed transaction.

PostgreSQL has no commit sequence numbers, and each node's snapshot is its own.  shoal keeps reads
and distributed commits apart with a *gate* on every node (extension/snapshot.c), a lock with two
modes that exclude each other:

- a distributed transaction holds it in *write* mode on every node it commits on, from before its
  decision (the coordinator's local commit) until its commit on that node;
- a reader holds it in *read* mode on every node it reads, all at the same time, while it takes its
  snapshots there.

Why that is enough: at the instant the reader holds every gate, no distributed transaction T is
between its decision and its commit on any of those nodes.  T either had decided earlier, and then
committed on each node before giving that node's gate up (so each snapshot, taken under the gate,
comes after T's commit there), or decides later (so its commits come after every snapshot).  Either
way the reader sees all of T or none of it.

A prepared part can lose its hold on the gate before its commit there: its node restarts, the
worker holding it dies, or the node loses touch with the coordinator and gives it up.  So a reader
holding a gate also looks for shoal transactions prepared on that node; one found is in doubt, and
counts as a busy gate until the node settles it (shoal.transactions.indoubt).

Writers may wait for a gate while holding others; readers never do: they *try* every gate and,
if one is held, give all of theirs back and start over.  So the gates cannot deadlock.

What takes a cut (extension/snapshot.c decides, this module takes it):

- a statement in READ COMMITTED with a snapshot of its own (a client's, or one of a VOLATILE
  function or a DO block), a SELECT or the reads of a write (not the rows it changes, which it
  reads at their newest version in the transaction's own block), that reads two nodes or more
  (after pruning), or one other node more than once (two scans of it, or a scan in a nested loop's
  inner side or a subplan, which sends a request per run): its snapshot here is refreshed under
  the gate, and on each other node one transaction block holds the snapshot for the statement's
  remote reads (read-only, REPEATABLE READ, ended with the statement).  On a node where the
  transaction has written, its reads go to its own block (they must see its writes), which holds a
  snapshot taken under the gate for the statement's reads.  One that calls STABLE functions in SQL
  or a procedural language takes a cut of every node: their statements run on its snapshot, and
  read in its cut, wherever they read (one that initial partition pruning calls, as its executor
  starts, makes it take that cut right then);
- the first statement of a REPEATABLE READ transaction, whatever it reads or writes, utility
  statements included (its snapshot is the transaction's, which later statements read on every node):
  the cut then spans every node, and its blocks become the transaction's own, so every later
  statement, on any node, reads the same cut (and its writes go into those blocks).

SERIALIZABLE transactions never reach other nodes (shoal.fdw.transport refuses): each node's
serializable checks would see only its part.  Not covered, and documented: SELECT ...
FOR UPDATE takes no cut (it reads the rows it locks at their newest version, as writes do).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shoal.fdw import backend, transport
from shoal.multiplexer import client as mux
from shoal.multiplexer.client import RemoteError, Stream
from shoal.multiplexer.protocol import encode_job
from shoal.transactions import indoubt

GATE_PATIENCE = 5  # times shoal.deadlock_timeout
FIRST_BACKOFF_S = 0.0005
MAX_BACKOFF_S = 0.02


@dataclass
class Cut:
    blocks: dict[str, str]  # node -> the transaction block holding the snapshot there
    # the nodes where that block is the transaction's own (it wrote there): it holds the
    # snapshot for the statement's reads, and goes on after it
    own: frozenset[str] = frozenset()


_cuts: dict[int, Cut] = {}
_next_id = 0
_joined = False  # the transaction ends the cuts left over by failed statements


def take(handlers: list[Any], reads_locally: bool, every_node: bool, whole_transaction: bool) -> int:
    """Take one cut for the statement starting now (see the module docstring), of every node or
    of those its scans read; returns the id its scans read in, 0 when it needs none."""
    me = backend.setting("shoal.node_name") or ""
    xact = transport.current()
    if every_node:
        nodes = sorted(row[0] for row in backend.query("SELECT name FROM shoal.nodes") if row[0] != me)
    else:  # the extension decided that the statement needs one
        nodes = sorted({h.node for h in handlers if isinstance(getattr(h, "node", None), str)} - {me})
    if not nodes:
        return 0
    own: frozenset[str] = frozenset()
    if whole_transaction:
        key = transport.transaction_key()
        blocks = {node: key for node in nodes}
    else:  # a transaction that wrote on a node reads there in its own block
        own = frozenset(node for node in nodes if xact is not None and node in xact.depth)
        blocks = {node: xact.key if node in own else f"{me}:{uuid.uuid4().hex}" for node in nodes}
    cut = Cut(blocks, own)
    _take(cut, reads_locally, read_only=not whole_transaction)
    if whole_transaction:
        transport.adopt_blocks(nodes)
        return 0  # the scans find the transaction's blocks by themselves
    global _next_id, _joined
    _next_id += 1
    _cuts[_next_id] = cut
    if not _joined:
        _joined = True
        backend.join_transaction(_Leftovers())
    return _next_id


def block(cut: int, node: str) -> str | None:
    """The block on ``node`` that the scans of ``cut`` read in."""
    entry = _cuts.get(cut)
    return entry.blocks.get(node) if entry is not None else None


def holds(cut: int, node: str) -> bool:
    """Does the transaction's own block on ``node`` hold the snapshot of ``cut``?"""
    entry = _cuts.get(cut)
    return entry is not None and node in entry.own


def end(cut: int) -> None:
    """The statement of ``cut`` ended: its blocks go (nobody waits for that)."""
    entry = _cuts.pop(cut, None)
    if entry is not None:
        _give_back(entry, entry.blocks)


def _give_back(cut: Cut, nodes: Iterable[str]) -> None:
    """End the cut's blocks on ``nodes``, or the snapshot it held in the transaction's own."""
    client = mux.connect()
    for node in nodes:
        op = "uncut" if node in cut.own else "rollback"
        client.request(node, encode_job(op), cut.blocks[node]).forget()


def _take(cut: Cut, local: bool, read_only: bool) -> None:
    """Hold every gate at once, taking the snapshots meanwhile; start over while one is busy."""
    deadline = time.monotonic() + _timeout_s()
    delay = FIRST_BACKOFF_S
    in_doubt: set[str] = set()
    while not _try(cut, local, read_only, in_doubt):
        if time.monotonic() > deadline:
            raise _gave_up(in_doubt)
        backend.wait(timeout=delay)
        delay = min(delay * 2, MAX_BACKOFF_S)


def _gave_up(in_doubt: set[str]) -> RemoteError:
    if in_doubt:
        return RemoteError(
            "40001", "could not take a consistent snapshot across nodes: node "
            f"{', '.join(sorted(in_doubt))} holds a prepared transaction left in doubt",
            hint="It is settled once its coordinator answers (see shoal.in_doubt); retry then.")
    return RemoteError(
        "40001", "could not take a consistent snapshot across nodes: distributed commits "
        f"kept a node's gate busy for {_timeout_s():g} s (5 x shoal.deadlock_timeout)",
        hint="Retry the statement.")


def _try(cut: Cut, local: bool, read_only: bool, in_doubt: set[str]) -> bool:
    """One attempt; the nodes found holding transactions in doubt go into ``in_doubt``."""
    client = mux.connect()
    blocks = cut.blocks
    job = encode_job("cut", isolation="repeatable read", read_only=read_only)
    in_own = encode_job("cut", in_block=True)
    streams: dict[str, Stream] = {node: client.request(node, in_own if node in cut.own else job, key)
                                  for node, key in blocks.items()}
    held: list[str] = []
    busy = False
    error: RemoteError | None = None
    for node, stream in streams.items():
        try:
            answer = stream.wait()[0]
        except RemoteError as exc:
            error = error or exc
            continue
        if answer == "CUT":
            held.append(node)
        else:
            busy = True
            if answer == "IN_DOUBT":
                in_doubt.add(node)
    if not busy and error is None and local:
        if not backend.gate(False, False, False):
            busy = True
        elif backend.query(indoubt.PREPARED_HERE_SQL):
            busy = True
            in_doubt.add(backend.setting("shoal.node_name") or "")
            backend.gate_release(False, False)
        else:  # every gate is held at this instant: the cut
            backend.refresh_snapshot()
            backend.gate_release(False, False)
    if not busy and error is None:
        for node in held:
            client.request(node, encode_job("release_gate"), blocks[node], control=True).forget()
        return True
    _give_back(cut, held)  # give everything back, and start over
    if error is not None:
        raise error
    return False


def _timeout_s() -> float:
    """How long a reader tries: a gate is busy for a commit's second phase (milliseconds), or
    until a lost coordinator's participants give it up (a few seconds)."""
    from shoal.multiplexer.config import milliseconds

    return GATE_PATIENCE * (milliseconds(backend.setting("shoal.deadlock_timeout"), 2000) / 1000 or 2.0)


class _Leftovers:
    """Hears of the transaction's end: the cuts of statements that failed end with it."""

    def begin(self, serializable: bool) -> None:
        pass

    def pre_commit(self) -> None:
        pass

    def commit(self) -> None:
        self._end()

    def rollback(self) -> None:
        self._end()

    def prepare(self, gid: str | None) -> None:
        self._end()

    def pre_prepare(self, gid: str | None) -> None:
        pass

    def sub_begin(self, level: int) -> None:
        pass

    def sub_commit(self, level: int) -> None:
        pass

    def sub_rollback(self, level: int) -> None:
        pass

    def _end(self) -> None:
        global _joined
        _joined = False
        leftovers = list(_cuts.values())
        _cuts.clear()
        for entry in leftovers:
            try:  # the transaction's own blocks end with it
                _give_back(entry, [node for node in entry.blocks if node not in entry.own])
            except RemoteError:
                pass  # the node's multiplexer ends blocks of backends that go away
