"""The SQL a scan or a write sends to the node that holds a partition.

Quals arrive already deparsed by PostgreSQL's ruleutils (with ``$n`` for values known only at run
time); this module adds the projection, order and limit around them, quotes every identifier it
writes, and binds the ``$n`` values as literals for statements that cannot take parameters
(``COPY (SELECT ...) TO STDOUT``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from shoal.fdw.quals import Quals, SortKey


def quote_ident(name: str) -> str:
    """An identifier, always quoted, so that any name (keywords, capitals, quotes) is safe."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A string literal for a server with standard_conforming_strings on."""
    if "\0" in text:
        raise ValueError("a SQL literal cannot contain a NUL character")
    return "'" + text.replace("'", "''") + "'"


def qualified_name(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def select_sql(
    table: str,
    columns: Sequence[str],
    quals: Quals,
    sortkeys: Sequence[SortKey] | None = None,
    limit: int | None = None,
) -> str:
    """``SELECT columns FROM table WHERE quals ORDER BY ... LIMIT n``, with ``$n`` left in place."""
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
    return sql


def _order_item(key: SortKey) -> str:
    item = quote_ident(key.attname)
    if key.collate and key.collate not in ("default",):
        item += f" COLLATE {quote_ident(key.collate)}"
    item += " DESC" if key.is_reversed else " ASC"
    item += " NULLS FIRST" if key.nulls_first else " NULLS LAST"
    return item


# A string literal, a quoted identifier, or a parameter: literals and identifiers are skipped so
# that a "$1" inside them is left alone.
_TOKENS = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|\$(\d+)""")


def bind_params(sql: str, params: Sequence[Any], render: Callable[[int, Any], str]) -> str:
    """Replace each ``$n`` outside literals and identifiers with ``render(n, params[n-1])``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return match.group(0)
        index = int(match.group(1))
        if not 1 <= index <= len(params):
            raise ValueError(f"the SQL refers to ${index}, but only {len(params)} values were given")
        return render(index, params[index - 1])

    return _TOKENS.sub(substitute, sql)


def insert_sql(table: str, columns: Sequence[str], returning: Sequence[str] = ()) -> str:
    """``INSERT INTO table (columns) VALUES (%s, ...) [RETURNING ...]``, psycopg placeholders."""
    if columns:
        cols = ", ".join(quote_ident(c) for c in columns)
        values = ", ".join(["%s"] * len(columns))
        sql = f"INSERT INTO {table} ({cols}) VALUES ({values})"
    else:
        sql = f"INSERT INTO {table} DEFAULT VALUES"
    if returning:
        sql += " RETURNING " + ", ".join(quote_ident(c) for c in returning)
    return sql


def copy_from_sql(table: str, columns: Sequence[str]) -> str:
    cols = ", ".join(quote_ident(c) for c in columns)
    return f"COPY {table} ({cols}) FROM STDIN"
