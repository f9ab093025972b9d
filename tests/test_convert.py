"""Unit tests of the Python half of the host, without a server: shoal.fdw.convert (values to and from
PostgreSQL), shoal.fdw.options (option validation and wrapper resolution), shoal.fdw.quals and the
helpers of shoal.fdw.host.  One test hands every to_text() output to the session's server, to check
that PostgreSQL's input functions read them back as the intended values.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from decimal import Decimal
from ipaddress import IPv4Address
from typing import Any

import pytest
from conftest import PgServer
from psycopg.types.range import Range

from shoal.fdw import ForeignDataWrapper, ParamValue, Qual, Quals, SortKey, options
from shoal.fdw.convert import from_binary, from_text, to_text
from shoal.fdw.host import create_handler, describe_exception, describe_sortkeys
from shoal.fdw.options import OptionError, resolve_wrapper, validate_options

INT4, INT8, TEXT, NUMERIC, FLOAT8, BOOL, BYTEA = 23, 20, 25, 1700, 701, 16, 17
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, UUID = 1082, 1083, 1114, 1184, 1186, 2950
JSON, JSONB, JSON_ARRAY, JSONB_ARRAY = 114, 3802, 199, 3807
INT4_ARRAY, TEXT_ARRAY, BYTEA_ARRAY, DATE_ARRAY = 1007, 1009, 1001, 1182
UTC = dt.UTC

# -- from_binary / from_text ---------------------------------------------------------------------


def test_from_binary_loads_what_psycopg_loads() -> None:
    assert from_binary(INT4, struct.pack("!i", -5)) == -5
    assert from_binary(INT8, struct.pack("!q", 2**40)) == 2**40
    assert from_binary(BOOL, b"\x01") is True
    # numeric 12.5: ndigits 2, weight 0, sign +, dscale 1, digits 12 and 5000
    assert from_binary(NUMERIC, struct.pack("!hhHhhh", 2, 0, 0, 1, 12, 5000)) == Decimal("12.5")
    assert from_binary(DATE, struct.pack("!i", 0)) == dt.date(2000, 1, 1)
    assert from_binary(TIMESTAMPTZ, struct.pack("!q", 0)) == dt.datetime(2000, 1, 1, tzinfo=UTC)
    assert from_binary(INTERVAL, struct.pack("!qii", 1_500_000, 2, 0)) == dt.timedelta(days=2, seconds=1.5)
    assert from_binary(UUID, bytes(range(16))) == uuid.UUID(bytes=bytes(range(16)))
    assert from_binary(JSONB, b'\x01{"a": [1, null]}') == {"a": [1, None]}
    # int4[] {1,NULL}: ndim 1, has nulls, elem oid, dim 2, lbound 1, then the elements
    array = struct.pack("!iiiii", 1, 1, INT4, 2, 1) + struct.pack("!ii", 4, 1) + struct.pack("!i", -1)
    assert from_binary(INT4_ARRAY, array) == [1, None]


def test_types_psycopg_does_not_know_come_as_text() -> None:
    assert from_binary(987654, b"whatever") is NotImplemented
    assert from_text(987654, "(1,2)") == "(1,2)"


# -- to_text -------------------------------------------------------------------------------------

# (value, column type OID, its type name, the text to_text must give, what PostgreSQL reads back)
TO_TEXT: list[tuple[Any, int, str, str, str]] = [
    (True, BOOL, "bool", "t", "true"),
    (False, BOOL, "bool", "f", "false"),
    (b"\x00\xff'\\", BYTEA, "bytea", "\\x00ff275c", "\\x00ff275c"),
    (bytearray(b"ab"), BYTEA, "bytea", "\\x6162", "\\x6162"),
    (memoryview(b"a"), BYTEA, "bytea", "\\x61", "\\x61"),
    (dt.date(1, 1, 1), DATE, "date", "0001-01-01", "0001-01-01"),
    (dt.time(23, 59, 59, 999999), TIME, "time", "23:59:59.999999", "23:59:59.999999"),
    (dt.datetime(2024, 2, 29, 12, 0, 0, 1), TIMESTAMP, "timestamp", "2024-02-29 12:00:00.000001",
     "2024-02-29 12:00:00.000001"),
    (dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))), TIMESTAMPTZ,
     "timestamptz", "2024-06-01 12:00:00+02:00", "2024-06-01 10:00:00+00"),
    (dt.date(2024, 1, 2), TIMESTAMP, "timestamp", "2024-01-02", "2024-01-02 00:00:00"),
    (dt.timedelta(days=3, seconds=3723, microseconds=5), INTERVAL, "interval",
     "3 days 3723 seconds 5 microseconds", "3 days 01:02:03.000005"),
    (dt.timedelta(microseconds=-1), INTERVAL, "interval", "-1 days 86399 seconds 999999 microseconds",
     "-1 days +23:59:59.999999"),
    (Decimal("12345678901234567890.000000000000000001"), NUMERIC, "numeric",
     "12345678901234567890.000000000000000001", "12345678901234567890.000000000000000001"),
    (Decimal("1E+5"), NUMERIC, "numeric", "1E+5", "100000"),
    (Decimal("NaN"), NUMERIC, "numeric", "NaN", "NaN"),
    (Decimal("-Infinity"), NUMERIC, "numeric", "-Infinity", "-Infinity"),
    (float("nan"), FLOAT8, "float8", "nan", "NaN"),
    (float("-inf"), FLOAT8, "float8", "-inf", "-Infinity"),
    (0.1, NUMERIC, "numeric", "0.1", "0.1"),
    (10**30, NUMERIC, "numeric", str(10**30), str(10**30)),
    (uuid.UUID(int=1), UUID, "uuid", "00000000-0000-0000-0000-000000000001",
     "00000000-0000-0000-0000-000000000001"),
    (IPv4Address("10.1.2.3"), 869, "inet", "10.1.2.3", "10.1.2.3/32"),
    (Range(1, 5), 3904, "int4range", "[1, 5)", "[1,5)"),
    ({"é": [1, None, True]}, JSONB, "jsonb", '{"é": [1, null, true]}', '{"é": [1, null, true]}'),
    ([1, "two"], JSON, "json", '[1, "two"]', '[1, "two"]'),
    ('{"raw": "json text"}', JSON, "json", '{"raw": "json text"}', '{"raw": "json text"}'),
    (12.5, JSONB, "jsonb", "12.5", "12.5"),
    ([1, None, 3], INT4_ARRAY, "int4[]", '{"1",NULL,"3"}', "{1,NULL,3}"),
    ([[1, 2], [3, None]], INT4_ARRAY, "int4[]", '{{"1","2"},{"3",NULL}}', "{{1,2},{3,NULL}}"),
    ((4, 5), INT4_ARRAY, "int4[]", '{"4","5"}', "{4,5}"),
    ([], INT4_ARRAY, "int4[]", "{}", "{}"),
    (['a"b', "c\\d", "NULL", "", "x,y", "é"], TEXT_ARRAY, "text[]",
     '{"a\\"b","c\\\\d","NULL","","x,y","é"}', '{"a\\"b","c\\\\d","NULL","","x,y",é}'),
    ([b"\x00", None], BYTEA_ARRAY, "bytea[]", '{"\\\\x00",NULL}', '{"\\\\x00",NULL}'),
    ([dt.date(2024, 1, 1)], DATE_ARRAY, "date[]", '{"2024-01-01"}', "{2024-01-01}"),
    ([{"a": 1}, [1, 2], "s", None], JSONB_ARRAY, "jsonb[]",
     '{"{\\"a\\": 1}","[1, 2]","\\"s\\"",NULL}', '{"{\\"a\\": 1}","[1, 2]","\\"s\\"",NULL}'),
]


@pytest.mark.parametrize(("value", "oid", "typname", "text", "reads_as"), TO_TEXT)
def test_to_text(value: Any, oid: int, typname: str, text: str, reads_as: str) -> None:
    assert to_text(value, oid) == text


def test_to_text_is_read_back_by_postgres(pg: PgServer) -> None:
    with pg.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for value, _oid, typname, text, reads_as in TO_TEXT:
            got = conn.execute(f"SELECT %s::{typname}::text", (text,)).fetchone()
            assert got == (reads_as,), (value, typname)


# -- options -------------------------------------------------------------------------------------


class Checked(ForeignDataWrapper):
    seen: list[tuple[str, dict[str, str]]] = []

    @classmethod
    def validate_options(cls, kind: str, options: dict[str, str]) -> None:
        cls.seen.append((kind, options))
        if options.get("mode") not in (None, "fast"):
            raise OptionError(f'unknown mode "{options["mode"]}"')


def test_resolve_wrapper(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_wrapper("test_convert.Checked") is Checked
    # without a wrapper option, a shoal node's remote-partition handler serves the table
    assert options.DEFAULT_WRAPPER == "shoal.fdw.remote.RemotePartition"
    monkeypatch.setattr(options, "DEFAULT_WRAPPER", "test_convert.Checked")
    assert resolve_wrapper(None) is Checked
    with pytest.raises(OptionError, match="is not of the form package.module.Class") as info:
        resolve_wrapper("Checked")
    assert info.value.hint
    with pytest.raises(OptionError, match='cannot import module "no.such"') as info:
        resolve_wrapper("no.such.Class")
    assert "shoal.python_path" in (info.value.hint or "")
    with pytest.raises(OptionError, match='module "test_convert" has no class "Nope"'):
        resolve_wrapper("test_convert.Nope")
    with pytest.raises(OptionError, match="is not a subclass of shoal.fdw.ForeignDataWrapper"):
        resolve_wrapper("test_convert.TO_TEXT")
    with pytest.raises(OptionError, match="is not a subclass"):
        resolve_wrapper("test_convert.OptionError")


def test_a_wrapper_checks_its_own_options() -> None:
    Checked.seen.clear()
    validate_options("table", {"wrapper": "test_convert.Checked", "mode": "fast"})
    assert Checked.seen == [("table", {"mode": "fast"})]
    with pytest.raises(OptionError, match='unknown mode "slow"'):
        validate_options("server", {"wrapper": "test_convert.Checked", "mode": "slow"})


@pytest.mark.parametrize(
    ("kind", "options", "sqlstate", "message"),
    [
        ("server", {"node": "n1", "colour": "red"}, "HV00D", 'invalid option "colour"'),
        ("server", {"wrapper": "test_convert.Checked", "node": "n1"}, "HV00D", "exclude each other"),
        ("server", {"node": "n1", "startup_cost": "-0.5"}, "HV024", '"startup_cost" must be a non-negative'),
        ("table", {"tuple_cost": "cheap"}, "HV024", '"tuple_cost" must be a non-negative'),
        ("table", {"tuple_cost": "nan"}, "HV024", '"tuple_cost" must be a non-negative'),
        ("table", {"tuple_cost": "inf"}, "HV024", '"tuple_cost" must be a non-negative'),
        ("server", {"node": ""}, "HV024", '"node" must not be empty'),
        ("table", {"table_name": ""}, "HV024", '"table_name" must not be empty'),
        ("table", {"schema_name": ""}, "HV024", '"schema_name" must not be empty'),
        ("column", {"column_name": ""}, "HV024", '"column_name" must not be empty'),
        ("table", {"analyze": "maybe"}, "HV024", '"analyze" must be a boolean'),
    ],
)
def test_invalid_options(kind: str, options: dict[str, str], sqlstate: str, message: str) -> None:
    with pytest.raises(OptionError, match=message) as info:
        validate_options(kind, options)
    assert info.value.sqlstate == sqlstate


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("server", {"node": "n1", "startup_cost": "0", "tuple_cost": "0.25", "analyze": "on"}),
        ("table", {"analyze": "False"}),
        ("server", {}),
        ("table", {"table_name": "t", "schema_name": "s", "anything": "for the handler"}),
        ("column", {"column_name": "c"}),
        ("user mapping", {"user": "x"}),
    ],
)
def test_valid_options(kind: str, options: dict[str, str]) -> None:
    validate_options(kind, options)


# -- quals and host helpers ----------------------------------------------------------------------


def test_quals() -> None:
    simple = Qual("id", "=", 5, "id = 5")
    in_list = Qual("id", ("=", True), [1, 2], "id = ANY ('{1,2}'::integer[])")
    not_in = Qual("id", ("<>", False), [3], "id <> ALL ('{3}'::integer[])")
    assert not simple.is_list_operator and simple.list_any_or_all is None
    assert in_list.is_list_operator and in_list.list_any_or_all == "ANY"
    assert not_in.list_any_or_all == "ALL"
    quals = Quals([simple, in_list], params=[7], param_types=[INT4])
    assert quals.sql == "(id = 5) AND (id = ANY ('{1,2}'::integer[]))"
    assert quals.params == [7] and quals.param_types == [INT4]
    assert Quals().sql == ""
    assert ParamValue(2) == ParamValue(2) and ParamValue(1) != ParamValue(2)


def test_describe_sortkeys() -> None:
    keys = [
        SortKey("a", 1, False, False, None),  # ASC NULLS LAST is the default
        SortKey("b", 2, True, True, None),  # DESC NULLS FIRST is the default
        SortKey("c", 3, True, False, "C"),
        SortKey("d", 4, False, True, None),
    ]
    assert describe_sortkeys(keys) == "a, b DESC, c DESC NULLS LAST, d NULLS FIRST"


def test_describe_exception() -> None:
    class Coded(Exception):
        sqlstate = "22012"
        hint = "Try less."

    try:
        raise ValueError("bad value")
    except ValueError as exc:
        message, sqlstate, detail, hint = describe_exception(exc)
    assert (message, sqlstate, hint) == ("ValueError: bad value", None, None)
    assert detail is not None and detail.startswith("Traceback") and "bad value" in detail
    assert describe_exception(Coded("divided")) == ("divided", "22012", None, "Try less.")


def test_create_handler() -> None:
    handler = create_handler(
        1234,
        {"wrapper": "test_convert.Checked", "mode": "fast"},
        [("id", 1, INT4, -1, "integer", "integer", {}), ("v", 3, 1043, 14, "character varying(10)",
                                                         "character varying", {"column_name": "w"})],
    )
    assert isinstance(handler, Checked)
    assert handler.options == {"mode": "fast"}
    assert handler.relid == 1234
    assert list(handler.columns) == ["id", "v"]
    assert handler.columns["v"].attnum == 3 and handler.columns["v"].options == {"column_name": "w"}
    assert handler.columns["v"].type_name == "character varying(10)"
