"""Global tables: what a statement changed in this node's copy, applied to the other copies.

Statement triggers (created by shoal.sharding.distribute) pass the transition tables as a text[]
literal of row values (the row type's text form, exact for every type); the other nodes delete the
old rows and insert the new ones, in the same transaction.  Old rows are found by primary key, or,
in a table without one, by their whole value: as many copies are deleted as the statement deleted.
Work arriving from another node (a worker applying changes) is not shipped again.
"""

from __future__ import annotations

from shoal.fdw import backend
from shoal.sharding import catalog, everywhere, tabledef
from shoal.sharding.catalog import quote_ident

_apply_sql: dict[int, tuple[str, str]] = {}  # relation -> (insert, delete), until the next DDL


def forget() -> None:
    """DDL may have changed a table's columns: build the statements again."""
    _apply_sql.clear()


def ship(oid: int, op: str, new_rows: str | None, old_rows: str | None) -> None:
    if backend.in_worker():
        return
    if new_rows is None and old_rows is None:
        return
    insert, delete = _statements(oid)
    me = catalog.this_node()
    steps: list[tuple[str, list[str | None]]] = []
    if old_rows is not None and op in ("update", "delete"):
        steps.append((delete, [old_rows]))
    if new_rows is not None and op in ("insert", "update"):
        steps.append((insert, [new_rows]))
    everywhere.run({node.name: steps for node in catalog.nodes() if node.name != me})


def _statements(oid: int) -> tuple[str, str]:
    cached = _apply_sql.get(oid)
    if cached is not None:
        return cached
    rel = catalog.relation(oid)
    table = tabledef.read(oid)
    _apply_sql[oid] = (insert_sql(rel, table), delete_sql(rel, table))
    return _apply_sql[oid]


def rows_sql(rel: catalog.Relation) -> str:
    """The rows of the text[] literal $1 as a relation ``s(r)`` of the table's row type."""
    return f"(SELECT x::{rel.sql} AS r FROM pg_catalog.unnest($1::text[]) x) s"


def insert_sql(rel: catalog.Relation, table: tabledef.TableDef) -> str:
    names = table.column_names(insertable=True)
    columns = ", ".join(quote_ident(c) for c in names)
    values = ", ".join(f"(s.r).{quote_ident(c)}" for c in names)
    return f"INSERT INTO {rel.sql} ({columns}) OVERRIDING SYSTEM VALUE SELECT {values} FROM {rows_sql(rel)}"


def delete_sql(rel: catalog.Relation, table: tabledef.TableDef) -> str:
    keys = next((keys for _, definition, keys in table.uniques if definition.startswith("PRIMARY KEY")), None)
    if keys:
        match = " AND ".join(f"t.{quote_ident(k)} = (s.r).{quote_ident(k)}" for k in keys)
        return f"DELETE FROM {rel.sql} t USING {rows_sql(rel)} WHERE {match}"
    # no key: whole rows, and no more copies of a row than the statement deleted
    return (
        f"DELETE FROM {rel.sql} WHERE ctid = ANY (ARRAY("
        f"SELECT c.ctid FROM (SELECT t.ctid, t::text AS k, "
        f"pg_catalog.row_number() OVER (PARTITION BY t::text) AS n FROM {rel.sql} t "
        f"WHERE t::text = ANY ($1::text[])) c "
        f"JOIN (SELECT x AS k, pg_catalog.count(*) AS wanted FROM pg_catalog.unnest($1::text[]) x "
        f"GROUP BY x) w ON w.k = c.k WHERE c.n <= w.wanted))"
    )
