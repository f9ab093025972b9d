"""The typed rows the FDW host tests carry through scans and modifications (not a test module).

``ROWS`` hold every common type as SQL literals; ``BINARY_ONLY_ROWS`` values that only binary rows
can carry as they are, because psycopg's Python objects (what Python rows hold) cannot.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from conftest import Db
from psycopg.rows import dict_row

COLUMNS: list[tuple[str, str]] = [
    ("id", "int4"),
    ("i2", "int2"),
    ("i4", "int4"),
    ("i8", "int8"),
    ("num", "numeric"),
    ("numt", "numeric(38,10)"),
    ("f4", "float4"),
    ("f8", "float8"),
    ("b", "bool"),
    ("t", "text"),
    ("vc", "varchar(20)"),
    ("c", "char(5)"),
    ("by", "bytea"),
    ("d", "date"),
    ("tm", "time"),
    ("ts", "timestamp"),
    ("tz", "timestamptz"),
    ("iv", "interval"),
    ("u", "uuid"),
    ("j", "json"),
    ("jb", "jsonb"),
    ("ai", "int4[]"),
    ("at", "text[]"),
    ("a2", "int4[]"),
    ("an", "numeric[]"),
]
COLUMN_DEFS = ", ".join(f"{name} {typ}" for name, typ in COLUMNS)
NAMES = [name for name, _ in COLUMNS]

# Values every path must carry, in the order of COLUMNS (SQL literals; row 3 is all NULL).
ROWS = [
    r"""(1, 32767, 2147483647, 9223372036854775807,
        '12345678901234567890123456789.123456789012345678901234567890',
        1234567890123456789012345678.0123456789, 'NaN', 'NaN', true,
        'héllo wörld ☃ 日本語 😀', 'ÄÖÜ äöü ß', 'ñ', '\x00ff10', '2024-02-29',
        '23:59:59.999999', '2024-02-29 12:34:56.789012', '2024-06-01 12:00:00+02',
        '3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
        '{"a": [1, 2, {"b": null}], "é": "ü"}', '{"k": [true, false, 1.5e300, "x"]}',
        '{1,NULL,3}', '{"a,b","c\"d",NULL,"é",""}', '{{1,2},{3,4}}', '{1.5,NaN,-0.001}')""",
    r"""(2, -32768, -2147483648, -9223372036854775808, '-0.000000000000000000001',
        -0.0000000001, 'Infinity', '-Infinity', false, '', '', '', '', '0001-01-01',
        '00:00', '1970-01-01 00:00', '1999-12-31 23:59:59.5-08', '-1 days +02:00:00',
        '00000000-0000-0000-0000-000000000000', '[]', '{}', '{}', '{}', '{{{1}},{{2}}}', '{}')""",
    "(3" + ", NULL" * (len(COLUMNS) - 1) + ")",
    r"""(4, 0, 0, 0, 0, 0, '-Infinity', 'Infinity', NULL, E'quote''s "dq" \\back\\ tab\t nl\n',
        'x', 'abcde', '\x', '9999-12-31', '12:00:00.000001', '2000-01-01 00:00:00.000001',
        '2262-04-11 23:47:16.854775+00', '0', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
        '[1, "two", null, 1e-5]', '{"nested": {"deeper": [[], {}]}}', '{NULL}', '{NULL,NULL}',
        '{{NULL,2},{3,NULL}}', '{NaN}')""",
    r"""(5, 1, 1, 1, 1e-30, 1, 1.17549435e-38, 5e-324, true, 'x', 'y', 'z', '\xdeadbeef',
        '2000-01-01', '01:02:03', '2000-01-01 01:02:03', '2000-01-01 01:02:03+00',
        '-3 days -04:05:06.000007', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', '12.5', '-0.5',
        '{-1}', '{"\\"}', '{{-1}}', '{1e20}')""",
    r"""(6, -1, -1, -1, -1e30, -1, 3.4028235e38, -0.0, false, '€', '€', '€', '\x00', '1999-01-08',
        '12:34:56', '1999-01-08 04:05:06', '1999-01-08 04:05:06 America/New_York',
        '1 day 00:00:00.000001', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A13', 'true', 'false', '{7}',
        '{"{}"}', '{{1,2,3}}', '{0.1}')""",
]

# Values only the binary path carries: psycopg (and so a Python row) cannot hold them as they are
# (dates outside Python's range, infinite timestamps, 24:00, interval months, numeric infinities,
# arrays with other lower bounds, JSON documents that are a bare string or null).
BINARY_ONLY_ROWS = [
    "(101, NULL, NULL, NULL, 'Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
    " 'infinity', '24:00:00', 'infinity', '-infinity', '1 year 2 mons 3 days', NULL, NULL, NULL,"
    " NULL, NULL, '[0:1]={5,6}', NULL)",
    "(102, NULL, NULL, NULL, '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
    " '4713-01-01 BC', NULL, '-infinity', 'infinity', '-178000000 years', NULL, '\"a string\"',"
    " 'null', NULL, NULL, NULL, NULL)",
]


def text_select(table: str, columns: list[str] | None = None, where: str = "", exact: bool = False) -> str:
    """Every column as text, in id order.

    Unless ``exact``, json is compared through jsonb and interval through its length in seconds:
    a Python row carries what psycopg's loaders made of them (a dict re-serialized with other spacing,
    a timedelta, which keeps days and seconds but normalizes ``-3 days -04:00`` to ``-4 days +20:00``).
    Binary rows are exact.
    """
    exprs = []
    for name, typ in COLUMNS:
        if columns is not None and name not in columns:
            continue
        if typ == "json" and not exact:
            exprs.append(f"{name}::jsonb::text")
        elif typ == "interval" and not exact:
            exprs.append(f"extract(epoch FROM {name})::text")
        else:
            exprs.append(f"{name}::text")
    return f"SELECT {', '.join(exprs)} FROM {table} {where} ORDER BY id"


def make_ref(db: Db, rows: list[str] = ROWS, table: str = "ref") -> None:
    db.execute(f"CREATE TABLE {table} ({COLUMN_DEFS})")
    db.execute(f"INSERT INTO {table} VALUES {', '.join(rows)}")


def python_rows(db: Db, table: str = "ref") -> list[dict]:
    """The rows as psycopg's Python objects: what a handler would get from a psycopg source."""
    with db.conn.cursor(row_factory=dict_row, binary=True) as cur:
        return cur.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def same_value(a: Any, b: Any) -> bool:
    """Equal and of the same type, with NaN equal to NaN and -0.0 told from 0.0."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, Decimal) and a.is_nan():
        return b.is_nan()
    return bool(a == b)


def assert_same_row(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        assert same_value(actual[name], expected[name]), (name, actual[name], expected[name])
