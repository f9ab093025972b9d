"""Prepared transactions left in doubt, and how they are settled.

shoal names a prepared transaction ``shoal:<coordinator>:<xid>:<nonce>``: the node whose
transaction decides, that transaction's full id there, and a random nonce (a crash can hand the
same id out again).  Before it commits, the coordinator's transaction inserts the gid into
``shoal.decided``: the row exists once and only once that transaction has committed, so it is the
durable record of the decision.  Any node can settle its own prepared part by asking the
coordinator:

- the coordinator's transaction is still running (between its PREPAREs and its commit): leave it;
- otherwise the row exists: it committed; COMMIT PREPARED;
- otherwise it aborted, or its node crashed before the commit: ROLLBACK PREPARED;
- the coordinator is unreachable: leave it, ``unknown`` in ``shoal.in_doubt``.

Each node's multiplexer has one of its workers run ``settle`` every few seconds, so nothing stays
prepared after a crash once the nodes are back; ``shoal.resolve_in_doubt()`` does it at once on
every node.  This module runs in workers, outside any transaction block (COMMIT PREPARED cannot run
inside one).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from shoal.multiplexer.protocol import decode_text_tuples, encode_job

GID_PREFIX = "shoal:"
DECISION_TIMEOUT_S = 5.0

# the coordinator's answers (pg_xact_status), and what they mean here
COMMITTED, ABORTED, IN_PROGRESS, UNKNOWN = "committed", "aborted", "in progress", "unknown"


def gid(coordinator: str, full_xid: int) -> str:
    """The name of a distributed transaction's prepared parts."""
    return f"{GID_PREFIX}{coordinator}:{full_xid}:{secrets.token_hex(4)}"


def parse_gid(name: str) -> tuple[str, int] | None:
    """(coordinator, full xid) of a shoal gid; None for any other prepared transaction."""
    parts = name.split(":")
    if len(parts) != 4 or f"{parts[0]}:" != GID_PREFIX or not parts[1] or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def record_decision(name: str) -> None:
    """In the coordinator's transaction, before it commits: the decision, should it commit."""
    from shoal.fdw import backend

    backend.record_decision(name)


@dataclass
class InDoubt:
    gid: str
    coordinator: str
    full_xid: int
    prepared_at: str
    age_s: float
    decision: str = UNKNOWN
    action: str = "left"


_PREPARED_SQL = (
    "SELECT gid, prepared::text, extract(epoch FROM now() - prepared)::text, "
    "(prepared < pg_catalog.pg_postmaster_start_time())::text "
    "FROM pg_catalog.pg_prepared_xacts "
    "WHERE database = pg_catalog.current_database() AND gid LIKE 'shoal:%' ORDER BY prepared"
)
# Is a shoal transaction prepared here?  Asked while holding the gate in read mode, when the ones
# in their second phase hold it in write mode: any found then has lost its holder (a restart, a
# worker that died, a coordinator out of touch), and is in doubt until settled.
PREPARED_HERE_SQL = (
    "SELECT FROM pg_catalog.pg_prepared_xact() p JOIN pg_catalog.pg_database d ON d.oid = p.dbid "
    "WHERE d.datname = pg_catalog.current_database() AND pg_catalog.starts_with(p.gid, 'shoal:') LIMIT 1"
)
# pg_xact_status raises for an id this node has not handed out (lost in a crash): not running
_DECISION_SQL = """
SELECT CASE WHEN CASE WHEN $2::pg_catalog.xid8 < pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())
                      THEN pg_catalog.pg_xact_status($2::pg_catalog.xid8) END = 'in progress'
            THEN 'in progress'
            WHEN EXISTS (SELECT FROM shoal.decided WHERE gid = $1) THEN 'committed'
            ELSE 'aborted' END
"""


def _query(pg: Any, sql: str, params: list[str] | None = None) -> list[tuple]:
    chunks: list[bytes] = []
    pg.execute(sql, [25] * len(params or []), params or [], False, None, chunks.append)
    return decode_text_tuples(b"".join(chunks))


def local_decision(pg: Any, name: str, full_xid: int) -> str:
    """What this node, the coordinator, decided for ``name`` (the ``decision`` job)."""
    return _query(pg, _DECISION_SQL, [name, str(full_xid)])[0][0]


def _decision(pg: Any, me: str, name: str, coordinator: str, full_xid: int) -> str:
    if coordinator == me:
        return local_decision(pg, name, full_xid)
    from shoal.multiplexer import client as mux
    from shoal.multiplexer.client import RemoteError

    try:
        client = mux.connect()
        job = encode_job("decision", gid=name, full_xid=full_xid)
        stream = client.request(coordinator, job, control=True)
        client.wait(lambda: stream.finished, DECISION_TIMEOUT_S)
        return stream.wait()[0]
    except (RemoteError, TimeoutError) as exc:
        return f"{UNKNOWN}: {exc}"


def survey(pg: Any, settle: bool, min_age_s: float = 0.0) -> list[InDoubt]:
    """This node's shoal prepared transactions with their coordinators' decisions; with
    ``settle``, those decided are committed or rolled back.  Those younger than ``min_age_s`` are
    left out, unless prepared before this server started (no second phase is on its way then)."""
    me = pg.setting("shoal.node_name") or ""
    found = []
    for name, prepared_at, age, before_start in _query(pg, _PREPARED_SQL):
        parsed = parse_gid(name)
        if parsed is None or (float(age) < min_age_s and before_start != "true"):
            continue
        entry = InDoubt(name, parsed[0], parsed[1], prepared_at, float(age))
        entry.decision = _decision(pg, me, name, entry.coordinator, entry.full_xid)
        if settle:
            entry.action = _settle(pg, entry)
        found.append(entry)
    return found


def _settle(pg: Any, entry: InDoubt) -> str:
    try:
        if entry.decision == COMMITTED:
            pg.commit_prepared(entry.gid)
            return "committed"
        if entry.decision == ABORTED:
            pg.rollback_prepared(entry.gid)
            return "rolled back"
    except pg.JobError as exc:  # settled meanwhile by someone else
        return f"left: {exc.message}"
    return "left"


_PREPARED_BY_SQL = (
    "SELECT gid FROM pg_catalog.pg_prepared_xacts "
    "WHERE database = pg_catalog.current_database() AND starts_with(gid, $1)"
)
PURGE_AFTER = "1 minute"  # the decisions of commits this recent are kept in any case


def prepared_by(pg: Any, coordinator: str) -> list[tuple[str]]:
    """The gids prepared here for ``coordinator`` (the ``prepared`` job)."""
    return _query(pg, _PREPARED_BY_SQL, [f"{GID_PREFIX}{coordinator}:"])


def purge_decisions(pg: Any) -> int:
    """Forget the decisions that no node needs any more: those of transactions prepared nowhere.
    Nothing is forgotten while a node does not answer (it may hold a prepared part)."""
    from shoal.multiplexer import client as mux
    from shoal.multiplexer.client import RemoteError

    me = pg.setting("shoal.node_name") or ""
    nodes = [row[0] for row in _query(pg, "SELECT name FROM shoal.node") if row[0] != me]
    needed = {row[0] for row in prepared_by(pg, me)}
    try:
        client = mux.connect()
        streams = [client.request(node, encode_job("prepared", coordinator=me), control=True)
                   for node in nodes]
        for stream in streams:
            client.wait(lambda stream=stream: stream.finished, DECISION_TIMEOUT_S)
            needed.update(row[0] for row in decode_text_tuples(b"".join(stream)))
    except (RemoteError, TimeoutError):
        return 0
    keep = "{" + ",".join('"' + g.replace("\\", "\\\\").replace('"', '\\"') + '"' for g in needed) + "}"
    _, purged = pg.execute(
        "DELETE FROM shoal.decided WHERE decided_at < now() - $1::interval AND gid <> ALL ($2::text[])",
        [25, 25], [PURGE_AFTER, keep], False, None, lambda chunk: None)
    return purged


def rows(entries: list[InDoubt], node: str) -> list[tuple[str, ...]]:
    """Rows for the workers' answer: node, gid, coordinator, prepared at, decision, action."""
    return [(node, e.gid, e.coordinator, e.prepared_at, e.decision, e.action) for e in entries]


# -- the operator's side: every node's in-doubt transactions, from any node ------------------------

COLUMNS = ("node", "gid", "coordinator", "prepared_at", "decision", "action")


def across_cluster(settle: bool) -> list[dict[str, str | None]]:
    """Every node's shoal prepared transactions (``shoal.in_doubt``), settled where decided if
    ``settle`` (``shoal.resolve_in_doubt()``).  Runs in a backend."""
    from shoal.fdw import backend
    from shoal.multiplexer import client as mux
    from shoal.multiplexer.client import RemoteError

    nodes = [row[0] for row in backend.query("SELECT name FROM shoal.node ORDER BY name")]
    client = mux.connect()
    op = "resolve" if settle else "in_doubt"
    streams = [(node, client.request(node, encode_job(op, min_age_s=0), control=True)) for node in nodes]
    found = []
    for node, stream in streams:
        try:
            found += decode_text_tuples(b"".join(stream))
        except RemoteError as exc:
            backend.log("warning", f"shoal: cannot list the in-doubt transactions of node {node}: {exc}")
    return [dict(zip(COLUMNS, row, strict=True)) for row in found]
