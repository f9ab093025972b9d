"""The postgres_fdw baseline's sharding: a loaded table on the coordinator becomes a hash-partitioned table
whose even-numbered partitions stay on the coordinator and whose odd-numbered ones live on the second node,
reached as postgres_fdw foreign tables.

This mirrors what ``shoal.create_distributed_table`` does, by hand, the way a DBA would build it with stock
PostgreSQL: same ``PARTITION BY HASH``, same modulus, so the same key lands in the same partition number on
both systems.  Unique indexes cannot be created on a partitioned table that has foreign partitions, so the
loaded table's indexes are recreated on every partition (local ones on the coordinator, remote ones on the
second node) instead of on the parent.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql


def node_of_remainder(remainder: int) -> int:
    """Index of the node holding partition `remainder`: even ones on the coordinator (0), odd ones on 1."""
    return remainder % 2


def partition_name(table: str, remainder: int) -> str:
    return f"{table}_p{remainder}"


def _column_defs(conn: psycopg.Connection[Any], table: str) -> str:
    row = conn.execute(
        """SELECT string_agg(quote_ident(attname) || ' ' || format_type(atttypid, atttypmod)
                             || CASE WHEN attnotnull THEN ' NOT NULL' ELSE '' END, ', ' ORDER BY attnum)
             FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped""",
        (table,)).fetchone()
    if row is None or row[0] is None:
        raise RuntimeError(f"table {table} has no columns")
    return str(row[0])


def _index_bodies(conn: psycopg.Connection[Any], table: str) -> list[tuple[bool, str]]:
    """(unique, "USING btree (cols)") of each index of `table`, to recreate them on other tables."""
    rows = conn.execute("SELECT indisunique, pg_get_indexdef(indexrelid) FROM pg_index "
                        "WHERE indrelid = %s::regclass ORDER BY indexrelid", (table,)).fetchall()
    return [(bool(unique), str(definition).split(" USING ", 1)[1]) for unique, definition in rows]


def _create_indexes(conn: psycopg.Connection[Any], table: str, bodies: list[tuple[bool, str]]) -> None:
    for unique, body in bodies:
        conn.execute(sql.SQL("CREATE {} INDEX ON {} USING {}").format(
            sql.SQL("UNIQUE" if unique else ""), sql.Identifier(table), sql.SQL(body)))


def distribute(coord: psycopg.Connection[Any], remote: psycopg.Connection[Any], server: str, table: str,
               column: str, partitions: int) -> dict[str, int]:
    """Turn `table` (a plain table on the coordinator, possibly with rows and indexes) into a table hash-
    partitioned on `column` into `partitions` partitions, the odd ones being postgres_fdw foreign tables on
    `server`.  Returns the rows that went to each partition."""
    load = f"{table}_load"
    columns = _column_defs(coord, table)
    bodies = _index_bodies(coord, table)
    ident, load_ident = sql.Identifier(table), sql.Identifier(load)
    coord.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(ident, load_ident))
    coord.execute(sql.SQL("CREATE TABLE {} ({}) PARTITION BY HASH ({})").format(
        ident, sql.SQL(columns), sql.Identifier(column)))
    rows: dict[str, int] = {}
    for remainder in range(partitions):
        name = partition_name(table, remainder)
        bounds = sql.SQL("FOR VALUES WITH (MODULUS {}, REMAINDER {})").format(
            sql.Literal(partitions), sql.Literal(remainder))
        select = sql.SQL("SELECT * FROM {} WHERE satisfies_hash_partition({}::regclass, {}, {}, {})").format(
            load_ident, sql.Literal(table), sql.Literal(partitions), sql.Literal(remainder),
            sql.Identifier(column))
        if node_of_remainder(remainder) == 0:
            coord.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} {}").format(
                sql.Identifier(name), ident, bounds))
            cur = coord.execute(sql.SQL("INSERT INTO {} ").format(sql.Identifier(name)) + select)
            rows[name] = cur.rowcount
            _create_indexes(coord, name, bodies)
        else:
            remote.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(name), sql.SQL(columns)))
            with coord.cursor().copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(select)) as out, \
                    remote.cursor().copy(sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(
                        sql.Identifier(name))) as into:
                for chunk in out:
                    into.write(chunk)
            count = remote.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name)))
            rows[name] = int(count.fetchone()[0])
            _create_indexes(remote, name, bodies)
            remote.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(name)))
            coord.execute(sql.SQL("CREATE FOREIGN TABLE {} PARTITION OF {} {} SERVER {} "
                                  "OPTIONS (table_name {})").format(
                sql.Identifier(name), ident, bounds, sql.Identifier(server), sql.Literal(name)))
    moved = sum(rows.values())
    before = coord.execute(sql.SQL("SELECT count(*) FROM {}").format(load_ident)).fetchone()[0]
    if moved != before:
        raise RuntimeError(f"distributing {table}: {before} rows loaded but {moved} placed in partitions")
    coord.execute(sql.SQL("DROP TABLE {}").format(load_ident))
    coord.execute(sql.SQL("ANALYZE {}").format(ident))
    return rows
