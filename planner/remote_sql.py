"""The SQL a scan or a write sends to the node that holds a partition.

Quals arrive already deparsed by PostgreSQL's ruleutils (with ``$n`` for values known only at run
time, sent as parameters); this module adds the projection, order and limit around them and
quotes every identifier it writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shoal.fdw.quals import Quals, SortKey


def quote_ident(name: str) -> str:
    """An identifier, always quoted, so that any name (keywords, capitals, quotes) is safe."""
    return '"' + name.replace('"', '""') + '"'


def qualified_name(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def select_sql(
    table: str,
    columns: Sequence[str],
    quals: Quals,
    sortkeys: Sequence[SortKey] | None = None,
    limit: int | None = None,
    for_update: bool = False,
) -> str:
    """``SELECT columns FROM table WHERE quals ORDER BY ... LIMIT n [FOR UPDATE]``, with ``$n``
    left in place."""
    # No column needed (count(*)): a zero-column select still returns one row per row.
    target = ", ".join(quote_ident(c) for c in columns)
    sql = f"SELECT {target} FROM {table}" if target else f"SELECT FROM {table}"
    where = quals.sql
    if where:
        sql += f" WHERE {where}"
    if sortkeys:
        sql += " ORDER BY " + ", ".join(_order_item(key) for key in sortkeys)
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    if for_update:
        sql += " FOR UPDATE"
    return sql


SAMPLE_MARGIN = 1.2  # a Bernoulli sample a little larger than asked for, which the taker trims


def sample_sql(table: str, columns: Sequence[str], rows: int, total: float) -> str:
    """``SELECT columns FROM table``, of a little more than ``rows`` of its ``total`` rows picked at
    random (``TABLESAMPLE BERNOULLI``: every row equally likely; no LIMIT, which would favour the
    first pages), or of all of them if it has few."""
    target = ", ".join(quote_ident(c) for c in columns)
    sql = f"SELECT {target} FROM {table}" if target else f"SELECT FROM {table}"
    if total > rows * SAMPLE_MARGIN:
        sql += f" TABLESAMPLE BERNOULLI ({100.0 * rows * SAMPLE_MARGIN / total!r})"
    return sql


def _order_item(key: SortKey) -> str:
    item = quote_ident(key.attname)
    if key.collate and key.collate not in ("default",):
        item += f" COLLATE {quote_ident(key.collate)}"
    item += " DESC" if key.is_reversed else " ASC"
    item += " NULLS FIRST" if key.nulls_first else " NULLS LAST"
    return item


@dataclass(frozen=True)
class Upsert:
    """``ON CONFLICT (target) DO UPDATE SET ... [WHERE ...]``: the SQL of each new value and of the
    condition, in which the existing row is ``alias`` and the proposed one ``excluded``."""

    target: tuple[str, ...]
    alias: str
    assignments: tuple[tuple[str, str], ...]
    where: str | None = None


def insert_sql(
    table: str,
    columns: Sequence[str],
    returning: Sequence[str] = (),
    rows: int = 1,
    skip_conflicts: bool = False,
    upsert: Upsert | None = None,
) -> str:
    """``INSERT INTO table (columns) VALUES ($1, ...), ... [RETURNING ...]`` for ``rows`` rows,
    placeholders numbered across the rows."""
    target = table if upsert is None else f"{table} AS {quote_ident(upsert.alias)}"
    if columns:
        cols = ", ".join(quote_ident(c) for c in columns)
        groups = [
            "(" + ", ".join(f"${1 + r * len(columns) + i}" for i in range(len(columns))) + ")"
            for r in range(rows)
        ]
        sql = f"INSERT INTO {target} ({cols}) VALUES {', '.join(groups)}"
    else:
        sql = f"INSERT INTO {target} DEFAULT VALUES"
    if skip_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    elif upsert is not None and upsert.target:
        sets = ", ".join(f"{quote_ident(c)} = {expr}" for c, expr in upsert.assignments)
        sql += f" ON CONFLICT ({', '.join(quote_ident(c) for c in upsert.target)}) DO UPDATE SET {sets}"
        if upsert.where is not None:
            sql += f" WHERE {upsert.where}"
    if returning:
        sql += " RETURNING " + ", ".join(quote_ident(c) for c in returning)
    return sql


def update_sql(table: str, columns: Sequence[str], returning: Sequence[str] = ()) -> str:
    """``UPDATE table SET c1 = $1, ... WHERE ctid = $n [RETURNING ...]``: one row, by address."""
    sets = ", ".join(f"{quote_ident(c)} = ${i + 1}" for i, c in enumerate(columns))
    sql = f"UPDATE {table} SET {sets} WHERE ctid = ${len(columns) + 1}"
    if returning:
        sql += " RETURNING " + ", ".join(quote_ident(c) for c in returning)
    return sql


def modify_sql(
    table: str,
    operation: str,
    quals: Quals,
    assignments: dict[str, str] | None = None,
    returning: Sequence[str] = (),
) -> str:
    """``UPDATE table SET c1 = <sql>, ... WHERE quals`` or ``DELETE FROM table WHERE quals``, with
    ``$n`` left in place: a whole statement, every row the quals select."""
    if operation == "UPDATE":
        if not assignments:
            raise ValueError("an UPDATE needs at least one assignment")
        sets = ", ".join(f"{quote_ident(c)} = {sql}" for c, sql in assignments.items())
        sql = f"UPDATE {table} SET {sets}"
    elif operation == "DELETE":
        sql = f"DELETE FROM {table}"
    else:
        raise ValueError(f"cannot modify with {operation!r}")
    if quals.sql:
        sql += f" WHERE {quals.sql}"
    if returning:
        sql += " RETURNING " + ", ".join(quote_ident(c) for c in returning)
    return sql


def delete_sql(table: str, returning: Sequence[str] = ()) -> str:
    """``DELETE FROM table WHERE ctid = $1 [RETURNING ...]``: one row, by address."""
    sql = f"DELETE FROM {table} WHERE ctid = $1"
    if returning:
        sql += " RETURNING " + ", ".join(quote_ident(c) for c in returning)
    return sql
