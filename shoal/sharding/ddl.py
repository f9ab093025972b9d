"""DDL on distributed and global tables, and on roles, seen before PostgreSQL runs it (the
extension's utility hook).

The extension describes the statement it parsed (kind, the OIDs of the relations it names, a few
flags: see extension/sqlfunc.c) and passes its text.  ``before(sql, info)`` answers False (not
shoal's business), None (done here: PostgreSQL skips the statement), or a callable to run after
PostgreSQL has run the statement here: it runs the same statement on the other nodes in the same
transaction, so that a failure anywhere aborts it everywhere.  It may also raise, refusing it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from shoal.errors import FeatureNotSupported, InvalidParameter, SqlError
from shoal.fdw import backend
from shoal.sharding import catalog, distribute, everywhere, foreign_keys, replicate, roles, uniques
from shoal.sharding.catalog import ShoalTable, quote_ident

Answer = bool | None | Callable[[], None]


def before(sql: str, info: dict[str, Any]) -> Answer:
    if everywhere.is_internal():
        return False  # statements shoal runs while handling one are its own business
    handler = _HANDLERS.get(info["kind"])
    if handler is None:
        return False
    with everywhere.internal():
        return handler(info, sql)


# -- CREATE TABLE ... WITH (distributed_by = ..., global) ---------------------------------------

def _create(info: dict[str, Any], sql: str) -> Answer:
    ours = info["options"]
    if "global" in ours and len(ours) > 1:
        raise InvalidParameter("a table is either global or distributed: drop the other options")
    if "global" not in ours and "distributed_by" not in ours:
        raise InvalidParameter("num_parts and colocate_with need distributed_by = 'column'")
    if info["partitioned"]:
        raise FeatureNotSupported("a distributed or global table cannot be partitioned or inherit: "
                                  "shoal partitions it")
    if not info["persistent"]:
        raise FeatureNotSupported("temporary and unlogged tables cannot be distributed or global")
    if info["if_not_exists"] and catalog.lookup(info["schema"], info["name"]) is not None:
        return False  # PostgreSQL says it exists and skips it
    parts = None
    if "num_parts" in ours:
        try:
            parts = int(ours["num_parts"])
        except ValueError:
            raise InvalidParameter(f"num_parts must be an integer, not {ours['num_parts']!r}") from None
    colocate = None
    if "colocate_with" in ours:
        colocate = backend.query("SELECT to_regclass($1)::oid", ours["colocate_with"])[0][0]
        if colocate is None:
            raise SqlError(f'colocate_with: relation "{ours["colocate_with"]}" does not exist',
                           sqlstate="42P01")

    def after() -> None:
        oid = catalog.lookup(info["schema"], info["name"])
        assert oid is not None
        if "global" in ours:
            distribute.create_global_table(oid)
        else:
            distribute.create_distributed_table(oid, ours["distributed_by"], parts, colocate)
        if info["foreign_keys"]:  # taken out of the statement by the extension
            made = catalog.lookup(info["schema"], info["name"])  # a new table: shoal's now
            table = catalog.shoal_table(made) if made is not None else None
            assert table is not None
            foreign_keys.add(info["foreign_keys"], table)

    return _guarded(after)


def _create_partition(info: dict[str, Any], sql: str) -> Answer:
    for table in _tables(info):
        if table.kind == "hash":
            raise FeatureNotSupported(f'the partitions of distributed table "{table.relation.name}" '
                                      "are shoal's: they cannot be added by hand")
    return False


# -- ALTER TABLE, CREATE INDEX, RENAME, GRANT: run here, then everywhere else --------------------

def _alter(info: dict[str, Any], sql: str) -> Answer:
    tables = _tables(info)
    if not tables:
        return False
    table = tables[0]
    if info["partitions"]:
        raise FeatureNotSupported(f'the partitions of "{table.relation.name}" are managed by shoal')
    if info["adds_foreign_key"]:
        if not info["only_foreign_keys"]:
            raise FeatureNotSupported(
                f'add foreign keys to "{table.relation.name}" in an ALTER TABLE of their own',
                hint="ALTER TABLE ... ADD [CONSTRAINT name] FOREIGN KEY (...) REFERENCES ...; a new column "
                     "first, then its foreign key.")
        foreign_keys.add(info["foreign_keys"], table)
        return None
    if table.kind == "hash" and info["dropped_constraints"] and foreign_keys.drop(info, table):
        return None
    if table.kind == "hash" and info["adds_unique"]:
        everywhere.run(uniques.statements(sql, table))
        return None
    return _guarded(lambda: _run_elsewhere([sql]))


def _alter_index(info: dict[str, Any], sql: str) -> Answer:
    return _guarded(lambda: _run_elsewhere([sql])) if _index_tables(info) else False


def _index(info: dict[str, Any], sql: str) -> Answer:
    tables = _tables(info)
    if not tables:
        return False
    if info["concurrent"]:
        raise FeatureNotSupported("CREATE INDEX CONCURRENTLY is not supported on shoal tables",
                                  hint="Create the index without CONCURRENTLY.")
    if tables[0].kind == "hash" and info["unique"]:
        everywhere.run(uniques.statements(sql, tables[0]))
        return None
    return _guarded(lambda: _run_elsewhere([sql]))


def _rename(info: dict[str, Any], sql: str) -> Answer:
    return _guarded(lambda: _run_elsewhere([sql])) if _tables(info) else False


def _grant(info: dict[str, Any], sql: str) -> Answer:
    found = _tables(info)
    if not found:
        return False
    tables = [t for t in found if t.kind == "hash"]

    def after() -> None:
        # a partition is read by its node's worker as the caller: it needs the parent's grants
        for table in tables:
            distribute.sync_privileges(table.relation.oid)
        names = [t.relation.sql for t in tables]
        _run_elsewhere([sql, *[("SELECT shoal._sync_privileges($1::regclass)", [n]) for n in names]])

    return _guarded(after)


# -- roles: every node has the same ones -------------------------------------------------------

def _role(info: dict[str, Any], sql: str) -> Answer:
    """CREATE, ALTER, RENAME and DROP ROLE and role membership (GRANT role TO role) run here, then
    as written on every other node (a password as its verifier), in the same transaction: remote
    work runs as the role that asked for it, so a role and its attributes must be the same
    everywhere."""
    me = backend.setting("shoal.node_name")
    if not me or all(node.name == me for node in catalog.nodes()):
        return False  # a server of its own, or a cluster of one
    return _guarded(lambda: _run_elsewhere([roles.without_password(sql, info)]))


# -- DROP, TRUNCATE -----------------------------------------------------------------------------

def _drop(info: dict[str, Any], sql: str) -> Answer:
    found = _index_tables(info) if info["kind"] == "drop_index" else _tables(info)
    if not found:
        return False
    if len(found) != len(info["relations"]):  # those that exist (IF EXISTS skips the others)
        raise FeatureNotSupported("drop shoal's tables (distributed or global) and their indexes in "
                                  "statements of their own")
    if info["concurrent"]:
        raise FeatureNotSupported("DROP INDEX CONCURRENTLY is not supported on shoal tables")
    return _guarded(lambda: _run_elsewhere([sql]))


def _truncate(info: dict[str, Any], sql: str) -> Answer:
    found = _tables(info)
    if not found:
        return False
    if len(found) != len(info["relations"]):
        raise FeatureNotSupported("truncate shoal's tables (distributed or global) in statements of "
                                  "their own")
    options = (" RESTART IDENTITY" if info["restart_seqs"] else "") + (" CASCADE" if info["cascade"] else "")
    per_node: dict[str, list[str]] = defaultdict(list)
    cluster = [n.name for n in catalog.nodes()]
    for table in found:
        if table.kind == "global":
            for node in cluster:
                per_node[node].append(table.relation.sql)
        else:
            for _, name, node in catalog.placement(table.relation.oid):
                per_node[node].append(f"{quote_ident(table.relation.schema)}.{quote_ident(name)}")
    everywhere.run({node: [f"TRUNCATE {', '.join(names)}{options}"] for node, names in per_node.items()})
    return None


# -- helpers ------------------------------------------------------------------------------------

def _guarded(action: Callable[[], None]) -> Callable[[], None]:
    def after() -> None:
        with everywhere.internal():
            replicate.forget()
            action()
    return after


def _run_elsewhere(statements: list[Any]) -> None:
    """The statements on every other node, under this session's search path (names resolve alike)."""
    me = catalog.this_node()
    path = backend.query("SELECT pg_catalog.current_setting('search_path')")[0][0]
    steps: list[Any] = [("SELECT pg_catalog.set_config('search_path', $1, true)", [path]), *statements]
    everywhere.run({node.name: steps for node in catalog.nodes() if node.name != me})


def _tables(info: dict[str, Any]) -> list[ShoalTable]:
    return [t for t in (catalog.shoal_table(oid) for oid in info["relations"]) if t is not None]


def _index_tables(info: dict[str, Any]) -> list[ShoalTable]:
    found = []
    for oid in info["relations"]:
        rows = backend.query("SELECT indrelid FROM pg_catalog.pg_index WHERE indexrelid = $1::oid", oid)
        table = catalog.shoal_table(rows[0][0]) if rows else None
        if table is not None:
            found.append(table)
    return found


_HANDLERS: dict[str, Callable[[dict[str, Any], str], Answer]] = {
    "create": _create,
    "create_partition": _create_partition,
    "alter": _alter,
    "alter_index": _alter_index,
    "index": _index,
    "rename": _rename,
    "rename_index": _alter_index,
    "grant": _grant,
    "drop": _drop,
    "drop_index": _drop,
    "truncate": _truncate,
    "role": _role,
}
