"""Global tables: what a statement changed in this node's copy, applied to the other copies.

Statement triggers (created by shoal.sharding.distribute) pass the transition tables as JSON; the
other nodes delete the old rows by primary key and insert the new ones, in the same transaction.
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
    columns = ", ".join(quote_ident(c) for c in table.column_names(insertable=True))
    keys = next(keys for _, definition, keys in table.uniques if definition.startswith("PRIMARY KEY"))
    rows = f"pg_catalog.jsonb_populate_recordset(NULL::{rel.sql}, $1::jsonb)"
    insert = (f"INSERT INTO {rel.sql} ({columns}) OVERRIDING SYSTEM VALUE SELECT {columns} FROM {rows}")
    match = " AND ".join(f"t.{quote_ident(k)} = o.{quote_ident(k)}" for k in keys)
    delete = f"DELETE FROM {rel.sql} t USING {rows} o WHERE {match}"
    _apply_sql[oid] = (insert, delete)
    return insert, delete
