"""INSERT, UPDATE and DELETE through the FDW host, with every common type.

The memory handler logs what each call received (pickled, so the tests see the Python objects
themselves): values must be the objects psycopg would give for the same rows, and RETURNING must
give back exactly what the handler returned.  Also: tuple routing into a foreign partition, COPY
FROM into a partitioned table and into a foreign table, batch inserts, the begin/end_modify hooks.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest
from conftest import Db
from typedata import COLUMN_DEFS, NAMES, ROWS, assert_same_row, make_ref, python_rows, text_select


def calls(db: Db, method: str) -> list[dict[str, Any]]:
    return [c for c in db.log() if c["method"] == method]


def returning(table: str) -> str:
    """The RETURNING list that matches text_select's columns, qualified with the table's name."""
    select = text_select(table)
    exprs = select[len("SELECT ") : select.index(f" FROM {table}")].split(", ")
    return ", ".join(e.replace(name, f"{table}.{name}", 1) for e, name in zip(exprs, NAMES, strict=True))


@pytest.fixture
def typed(db: Db) -> Db:
    make_ref(db)
    db.memory_table("ft", COLUMN_DEFS, rowid="id", log=db.path("calls.log"))
    return db


def test_insert_gives_the_handler_python_objects_and_returning_gives_them_back(typed: Db) -> None:
    db = typed
    returned = db.execute(f"INSERT INTO ft SELECT * FROM ref ORDER BY id RETURNING {returning('ft')}")
    assert returned == db.execute(text_select("ref"))
    inserts = calls(db, "insert")
    expected = python_rows(db)
    assert len(inserts) == len(ROWS) == len(expected)
    for call, row in zip(inserts, expected, strict=True):
        assert_same_row(call["values"], row)
    # and the handler's rows read back the same
    assert db.execute(text_select("ft")) == db.execute(text_select("ref"))
    assert [c["operation"] for c in calls(db, "begin_modify")] == ["INSERT"]
    assert len(calls(db, "end_modify")) == 1


def test_update_sends_the_row_id_and_new_values(typed: Db) -> None:
    db = typed
    db.execute("INSERT INTO ft (id) SELECT id FROM ref")
    sets = ", ".join(f"{name} = r.{name}" for name in NAMES if name != "id")
    returned = db.execute(f"UPDATE ft SET {sets} FROM ref r WHERE r.id = ft.id RETURNING {returning('ft')}")
    assert sorted(returned) == sorted(db.execute(text_select("ref")))
    expected = {row["id"]: row for row in python_rows(db)}
    updates = calls(db, "update")
    assert sorted(c["rowid"] for c in updates) == sorted(expected)
    for call in updates:
        assert type(call["rowid"]) is int
        row = dict(expected[call["rowid"]])
        del row["id"]  # only the columns the statement sets are sent
        assert_same_row(call["values"], row)
    assert db.execute(text_select("ft")) == db.execute(text_select("ref"))


def test_update_of_some_columns_sends_only_those(typed: Db) -> None:
    db = typed
    db.execute("INSERT INTO ft SELECT * FROM ref")
    assert db.execute("UPDATE ft SET t = t || '!', i2 = NULL WHERE id IN (1, 2) RETURNING id, t, i2") in (
        [(1, "héllo wörld ☃ 日本語 😀!", None), (2, "!", None)],
        [(2, "!", None), (1, "héllo wörld ☃ 日本語 😀!", None)],
    )
    updates = calls(db, "update")
    assert sorted((c["rowid"], c["values"]["t"]) for c in updates) == [
        (1, "héllo wörld ☃ 日本語 😀!"),
        (2, "!"),
    ]
    assert all(c["values"].keys() == {"t", "i2"} and c["values"]["i2"] is None for c in updates)
    # the other columns were kept
    assert db.execute("SELECT i4, by, a2::text FROM ft WHERE id = 1") == [
        (2147483647, b"\x00\xff\x10", "{{1,2},{3,4}}")
    ]


def test_delete_sends_the_row_id_and_returning_gives_the_old_row(typed: Db) -> None:
    db = typed
    db.execute("INSERT INTO ft SELECT * FROM ref")
    returned = db.execute(f"DELETE FROM ft WHERE id <> 3 RETURNING {returning('ft')}")
    assert sorted(returned) == sorted(db.execute(text_select("ref", where="WHERE id <> 3")))
    assert sorted(c["rowid"] for c in calls(db, "delete")) == [1, 2, 4, 5, 6]
    assert db.execute("SELECT id FROM ft") == [(3,)]
    assert [c["operation"] for c in calls(db, "begin_modify")] == ["INSERT", "DELETE"]


def test_text_row_ids_and_defaults(db: Db) -> None:
    db.memory_table("ft", "k text, n int DEFAULT 42, note text", rowid="k", log=db.path("calls.log"))
    db.execute("INSERT INTO ft (k) VALUES ('ä'), ('b')")
    assert [c["values"] for c in calls(db, "insert")] == [
        {"k": "ä", "n": 42, "note": None},
        {"k": "b", "n": 42, "note": None},
    ]
    db.execute("UPDATE ft SET note = 'x' WHERE k = 'ä'")
    db.execute("DELETE FROM ft WHERE k = 'b'")
    assert [c["rowid"] for c in calls(db, "update") + calls(db, "delete")] == ["ä", "b"]
    assert db.execute("SELECT * FROM ft") == [("ä", 42, "x")]


def test_returning_when_the_handler_returns_none_is_the_row_as_sent(db: Db) -> None:
    db.foreign_table("ro", "id int, t text", "raiser.Raiser", where="none")
    assert db.execute("INSERT INTO ro VALUES (7, 'seven') RETURNING id, t") == [(7, "seven")]


def test_tuple_routing_into_a_foreign_partition(db: Db) -> None:
    db.execute("CREATE TABLE p (id int, t text, ts timestamptz) PARTITION BY RANGE (id)")
    db.memory_table("p_remote", "id int, t text, ts timestamptz", log=db.path("calls.log"))
    db.execute("ALTER TABLE p ATTACH PARTITION p_remote FOR VALUES FROM (0) TO (100)")
    db.execute("CREATE TABLE p_local PARTITION OF p FOR VALUES FROM (100) TO (200)")
    returned = db.execute(
        "INSERT INTO p VALUES (1, 'a', '2024-01-01 00:00+00'), (150, 'b', NULL), (2, 'ü', NULL) "
        "RETURNING id, t, tableoid::regclass::text"
    )
    assert returned == [(1, "a", "p_remote"), (150, "b", "p_local"), (2, "ü", "p_remote")]
    inserts = calls(db, "insert")
    assert [c["values"]["id"] for c in inserts] == [1, 2]
    assert inserts[0]["values"]["ts"].isoformat() == "2024-01-01T00:00:00+00:00"
    assert [c["operation"] for c in calls(db, "begin_modify")] == ["INSERT"]
    assert len(calls(db, "end_modify")) == 1
    assert db.execute("SELECT id, t FROM p ORDER BY id") == [(1, "a"), (2, "ü"), (150, "b")]
    assert db.execute("SELECT id FROM p WHERE id < 100 ORDER BY id") == [(1,), (2,)]


def test_copy_from_into_a_partitioned_table_and_a_foreign_table(db: Db) -> None:
    db.execute("CREATE TABLE p (id int, t text, n numeric) PARTITION BY LIST (id)")
    db.memory_table("p_remote", "id int, t text, n numeric", log=db.path("calls.log"))
    db.execute("ALTER TABLE p ATTACH PARTITION p_remote FOR VALUES IN (1, 2, 3)")
    db.execute("CREATE TABLE p_local PARTITION OF p DEFAULT")
    rows = [
        (1, "one", "1.5"),
        (9, "nine", None),
        (2, "twö", "123456789012345678901234567890.1"),
        (3, None, "-0"),
    ]
    with db.conn.cursor() as cur, cur.copy("COPY p FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    inserts = calls(db, "insert")
    assert [(c["values"]["id"], c["values"]["t"], c["values"]["n"]) for c in inserts] == [
        (1, "one", Decimal("1.5")),
        (2, "twö", Decimal("123456789012345678901234567890.1")),
        (3, None, Decimal("0")),
    ]
    assert db.execute("SELECT id, t, n::text FROM p ORDER BY id") == [
        (1, "one", "1.5"),
        (2, "twö", "123456789012345678901234567890.1"),
        (3, None, "0"),
        (9, "nine", None),
    ]
    # straight into the foreign table
    with db.conn.cursor() as cur, cur.copy("COPY p_remote (id, t) FROM STDIN") as copy:
        copy.write_row((1, "uno"))
    assert calls(db, "insert")[-1]["values"] == {"id": 1, "t": "uno", "n": None}
    assert [c["operation"] for c in calls(db, "begin_modify")] == ["INSERT", "INSERT"]


def test_batch_insert_sends_rows_in_batches(db: Db) -> None:
    db.memory_table("ft", "id int, t text", batch_size=10, log=db.path("calls.log"))
    db.execute("INSERT INTO ft SELECT g, 'row ' || g FROM generate_series(1, 25) g")
    batches = calls(db, "bulk_insert")
    assert [len(c["rows"]) for c in batches] == [10, 10, 5]
    assert [r["id"] for c in batches for r in c["rows"]] == list(range(1, 26))
    assert batches[0]["rows"][0] == {"id": 1, "t": "row 1"}
    assert calls(db, "insert") == []
    assert db.one("SELECT count(*) FROM ft") == 25
    # RETURNING needs each row back: no batches then
    assert db.execute("INSERT INTO ft VALUES (26, 'x'), (27, 'y') RETURNING id") == [(26,), (27,)]
    assert [c["values"]["id"] for c in calls(db, "insert")] == [26, 27]


def test_batch_insert_through_tuple_routing(db: Db) -> None:
    db.execute("CREATE TABLE p (id int, t text) PARTITION BY RANGE (id)")
    db.memory_table("p_remote", "id int, t text", batch_size=4, log=db.path("calls.log"))
    db.execute("ALTER TABLE p ATTACH PARTITION p_remote FOR VALUES FROM (0) TO (10)")
    db.execute("CREATE TABLE p_local PARTITION OF p FOR VALUES FROM (10) TO (20)")
    db.execute("INSERT INTO p SELECT g, g::text FROM generate_series(1, 15) g")
    assert [len(c["rows"]) for c in calls(db, "bulk_insert")] == [4, 4, 1]
    assert db.one("SELECT count(*) FROM p") == 15


def test_explain_does_not_start_a_modification(db: Db) -> None:
    db.memory_table("ft", "id int, t text", rowid="id", log=db.path("calls.log"))
    plan = db.explain("INSERT INTO ft VALUES (1, 'a')")
    assert "Insert on" in plan
    db.explain("UPDATE ft SET t = 'b'")
    assert calls(db, "begin_modify") == [] and calls(db, "end_modify") == []
    assert calls(db, "insert") == [] and calls(db, "begin") == []


def test_update_without_a_rowid_column_is_refused(db: Db) -> None:
    db.memory_table("ft", "id int, t text")
    with pytest.raises(psycopg.errors.FdwUnableToCreateExecution, match="does not support UPDATE"):
        db.execute("UPDATE ft SET t = 'x'")
    db.memory_table("bad", "id int, t text", rowid="nope")
    with pytest.raises(psycopg.errors.FdwColumnNameNotFound, match='rowid_column "nope"'):
        db.execute("DELETE FROM bad")
    assert db.one("SELECT 1") == 1


def test_domains_and_enums(db: Db) -> None:
    """A domain's values reach the handler as its base type's objects; its constraint still holds
    for the rows the handler gives back."""
    db.execute("CREATE DOMAIN posint AS int CHECK (VALUE > 0)")
    db.execute("CREATE DOMAIN price AS numeric(10,2)")
    db.execute("CREATE TYPE mood AS ENUM ('sad', 'ok')")
    db.memory_table("ft", "id posint, p price, m mood", rowid="id", log=db.path("calls.log"))
    assert db.execute("INSERT INTO ft VALUES (5, 1.5, 'ok') RETURNING id, p::text, m") == [(5, "1.50", "ok")]
    assert calls(db, "insert")[-1]["values"] == {"id": 5, "p": Decimal("1.50"), "m": "ok"}
    assert type(calls(db, "insert")[-1]["values"]["id"]) is int
    db.execute("UPDATE ft SET m = 'sad' WHERE id = 5")
    assert calls(db, "update")[-1]["rowid"] == 5
    assert db.execute("SELECT * FROM ft WHERE id = 5 AND p > 1") == [(5, Decimal("1.50"), "sad")]
    assert [q[:3] for q in calls(db, "execute")[-1]["quals"]] in (
        [("id", "=", 5), ("p", ">", Decimal("1"))],
        [("p", ">", Decimal("1")), ("id", "=", 5)],
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO ft VALUES (-1, 1, 'ok')")
    # a handler's row that breaks the domain is refused too
    db.memory_table("bad", "id posint", source=db.write_pickle("bad.pkl", [{"id": -3}]))
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("SELECT * FROM bad")


def test_upsert_into_a_partition_whose_handler_does_not_say_upsert_is_refused(db: Db) -> None:
    db.execute("CREATE TABLE up (id int, v text) PARTITION BY LIST (id)")
    db.execute("CREATE TABLE up_local PARTITION OF up (PRIMARY KEY (id)) FOR VALUES IN (1)")
    db.memory_table("up_mem", "id int, v text")
    db.execute("ALTER TABLE up ATTACH PARTITION up_mem FOR VALUES IN (2)")
    db.execute("INSERT INTO up VALUES (1, 'a'), (2, 'b')")
    db.execute("INSERT INTO up VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET v = excluded.v")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match='foreign table "up_mem"'):
        db.execute("INSERT INTO up VALUES (2, 'x') ON CONFLICT (id) DO UPDATE SET v = excluded.v")
    assert db.execute("SELECT * FROM up ORDER BY id") == [(1, "x"), (2, "b")]
