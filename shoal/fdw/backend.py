"""The backend hosting this interpreter, as Python sees it (the extension's ``_shoal_pg`` module).

Importable outside a server too (for unit tests and tools); calls then fail with a clear error.
"""

from __future__ import annotations

from typing import Any

try:
    import _shoal_pg as _pg
except ImportError:  # not inside a PostgreSQL backend
    _pg = None


class NotInBackend(RuntimeError):
    """Raised when backend services are used outside a PostgreSQL backend."""


def _require() -> Any:
    if _pg is None:
        raise NotInBackend("this needs the shoal extension's embedded interpreter")
    return _pg


def query(sql: str, *args: Any) -> list[tuple]:
    """Run SQL through SPI with text arguments; rows as tuples of Python values."""
    return _require().query(sql, *args)


def nest_level() -> int:
    """The local transaction's nesting level (1 outside savepoints)."""
    return _require().nest_level()


def wait(fd: int = -1, timeout: float | None = None, write: bool = False) -> bool:
    """Sleep on the backend's latch and optionally a socket; cancel and timeouts interrupt it
    (QueryCanceled).  Returns whether the socket is ready.  It may return early, whenever the
    backend's latch is set: a caller waiting for a deadline loops until it has passed."""
    return _require().wait(fd, timeout, write)


def check_interrupts() -> None:
    """Raise QueryCanceled if the backend has a cancel or termination pending."""
    _require().check_interrupts()


def log(level: str, message: str) -> None:
    """Write to the server log (debug, log, info, notice or warning)."""
    _require().log(level, message)


def setting(name: str) -> str | None:
    """A server setting (GUC) by name, None if it does not exist."""
    return _require().setting(name)


def current_role() -> str:
    """The role whose privileges apply now (current_user)."""
    return _require().current_role()


def in_worker() -> bool:
    """True in shoal's multiplexer and workers, which run work sent by other nodes."""
    return _require().in_worker()


def join_transaction(participant: Any) -> None:
    """``participant`` hears of the local transaction's end and savepoints (``pre_commit``,
    ``commit``, ``rollback``, ``sub_commit``... like a handler whose table the transaction used)."""
    _require().join_transaction(participant)


def wrote_locally() -> bool:
    """Has the local transaction written anything here (does it have a transaction id)?"""
    return _require().wrote_locally()


def guard_lock_waits() -> None:
    """The transaction has work on other nodes: its lock waits here end after
    shoal.deadlock_timeout, reported as a possible deadlock (40P01)."""
    _require().guard_lock_waits()


def record_decision(gid: str) -> None:
    """Insert the decision of the distributed commit ``gid`` (a row of shoal.decided) in this
    transaction, whatever the role running it."""
    _require().record_decision(gid)


def top_transaction_id() -> int:
    """The local transaction's full transaction id, assigned now if it has none: the durable
    record of a distributed commit's decision is this id's commit."""
    return _require().top_transaction_id()


def crash() -> None:
    """End this backend as a crash would (``shoal.crash_point``: tests of recovery only)."""
    _require().crash()


def gate(write: bool, wait: bool, session: bool) -> bool:
    """Take this node's commit gate (shoal.transactions.snapshots); without ``wait``, False when
    it is held in the other mode.  ``session``: kept across transactions until released."""
    return _require().gate(write, wait, session)


def gate_release(write: bool, session: bool) -> None:
    _require().gate_release(write, session)


def role_password(name: str) -> str | None:
    """The password verifier stored for role ``name`` (None: no password, or no such role)."""
    return _require().role_password(name)


def refresh_snapshot() -> None:
    """The running statement's snapshot (and a REPEATABLE READ transaction's) becomes current."""
    _require().refresh_snapshot()


def current_cut() -> int:
    """The cut the scan starting now reads in (0: none)."""
    return _require().current_cut()


def serializable() -> bool:
    """Is the local transaction SERIALIZABLE?"""
    return _require().serializable()


def admit(slots: int, wait: bool) -> None:
    """Take one of this node's ``slots`` for transactions holding blocks on other nodes, waiting
    for one (as for a lock) if ``wait``; the slot is this transaction's until it ends."""
    _require().admit(slots, wait)
