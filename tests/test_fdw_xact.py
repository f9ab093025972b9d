"""Transaction callbacks reach the handlers a transaction used, in order, once each.

The memory handler logs every call; the raiser fails in a chosen callback.  Covers: begin (with the
isolation level), pre_commit and commit, rollback (explicit and after an error), savepoints
(sub_begin, sub_commit, sub_rollback with their nesting level), PREPARE TRANSACTION (pre_prepare and
prepare with the gid), several handlers in one transaction, and what a failing callback does: before
the commit point it aborts the transaction, after it it is a WARNING and the others still hear.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from conftest import Db

XACT_METHODS = {"begin", "pre_commit", "commit", "rollback", "pre_prepare", "prepare", "sub_begin",
                "sub_commit", "sub_rollback", "execute", "begin_modify", "end_modify", "insert"}


def events(db: Db, table: str | None = None) -> list[tuple[Any, ...]]:
    """(method, argument) of each logged call that matters here, in order."""
    result: list[tuple[Any, ...]] = []
    for call in db.log():
        if call["method"] not in XACT_METHODS or (table and call["table"] != f"{db.schema}.{table}"):
            continue
        arg = next((call[k] for k in ("serializable", "level", "gid", "operation") if k in call), None)
        result.append((call["method"], arg) if arg is not None else (call["method"],))
    return result


@pytest.fixture
def logged(db: Db) -> Db:
    log = db.path("calls.log")
    db.memory_table("a", "id int", log=log, source=db.write_pickle("a.pkl", [{"id": 1}]))
    db.memory_table("b", "id int", log=log, source=db.write_pickle("b.pkl", [{"id": 2}]))
    db.execute("CREATE TABLE local (x int)")
    return db


def test_an_autocommit_statement(logged: Db) -> None:
    db = logged
    db.execute("SELECT * FROM a")
    assert events(db) == [("begin", False), ("execute",), ("pre_commit",), ("commit",)]


def test_a_transaction_joins_each_handler_once(logged: Db) -> None:
    db = logged
    with db.conn.transaction():
        db.execute("SELECT * FROM a")
        db.execute("SELECT * FROM a")
        db.execute("INSERT INTO b VALUES (3)")
    assert events(db, "a") == [("begin", False), ("execute",), ("execute",), ("pre_commit",), ("commit",)]
    assert events(db, "b") == [
        ("begin", False), ("begin_modify", "INSERT"), ("insert",), ("end_modify",), ("pre_commit",),
        ("commit",),
    ]
    # the next transaction starts afresh
    db.execute("SELECT * FROM b")
    assert events(db, "b")[-4:] == [("begin", False), ("execute",), ("pre_commit",), ("commit",)]


def test_rollback_explicit_and_after_an_error(logged: Db) -> None:
    db = logged
    db.conn.autocommit = False
    db.execute("SELECT * FROM a")
    db.conn.rollback()
    assert events(db) == [("begin", False), ("execute",), ("rollback",)]
    db.execute("SELECT * FROM a")
    with pytest.raises(psycopg.errors.DivisionByZero):
        db.execute("SELECT 1/0")
    db.conn.rollback()
    db.conn.autocommit = True
    assert events(db)[3:] == [("begin", False), ("execute",), ("rollback",)]


@pytest.mark.parametrize(
    ("level", "serializable"),
    [("READ COMMITTED", False), ("REPEATABLE READ", True), ("SERIALIZABLE", True)],
)
def test_begin_knows_the_isolation_level(logged: Db, level: str, serializable: bool) -> None:
    db = logged
    db.conn.autocommit = False
    db.execute(f"SET TRANSACTION ISOLATION LEVEL {level}")
    db.execute("SELECT * FROM a")
    db.conn.commit()
    db.conn.autocommit = True
    assert events(db)[0] == ("begin", serializable)


def test_savepoints(logged: Db) -> None:
    db = logged
    db.conn.autocommit = False
    db.execute("SELECT * FROM a")
    db.execute("SAVEPOINT s1")
    db.execute("SAVEPOINT s2")
    db.execute("RELEASE SAVEPOINT s2")
    db.execute("ROLLBACK TO SAVEPOINT s1")
    db.execute("RELEASE SAVEPOINT s1")
    db.conn.commit()
    db.conn.autocommit = True
    assert events(db) == [
        ("begin", False), ("execute",),
        ("sub_begin", 2), ("sub_begin", 3), ("sub_commit", 3),
        ("sub_rollback", 2), ("sub_begin", 2),  # ROLLBACK TO keeps the savepoint: a new one starts
        ("sub_commit", 2),
        ("pre_commit",), ("commit",),
    ]


def test_a_handler_joining_inside_a_savepoint(logged: Db) -> None:
    db = logged
    db.conn.autocommit = False
    db.execute("SAVEPOINT s1")
    db.execute("SELECT * FROM a")
    db.execute("ROLLBACK TO SAVEPOINT s1")
    db.conn.commit()
    db.conn.autocommit = True
    assert events(db) == [
        ("begin", False), ("execute",), ("sub_rollback", 2), ("sub_begin", 2),
        ("sub_commit", 2),  # COMMIT ends the savepoint that ROLLBACK TO restarted
        ("pre_commit",), ("commit",),
    ]


def test_prepare_transaction(logged: Db) -> None:
    db = logged
    db.conn.autocommit = False
    db.execute("SELECT * FROM a")
    db.execute("INSERT INTO local VALUES (1)")
    db.execute("PREPARE TRANSACTION 'shoal_gid_1'")
    db.conn.autocommit = True
    assert events(db) == [
        ("begin", False), ("execute",), ("pre_prepare", "shoal_gid_1"), ("prepare", "shoal_gid_1")
    ]
    db.execute("COMMIT PREPARED 'shoal_gid_1'")
    assert db.one("SELECT count(*) FROM local") == 1
    assert len(events(db)) == 4  # the handler took no part in COMMIT PREPARED


def test_pre_commit_failure_aborts_the_transaction(logged: Db) -> None:
    db = logged
    db.foreign_table("r", "id int", "raiser.Raiser", where="pre_commit")
    db.conn.autocommit = False
    db.execute("INSERT INTO local VALUES (1)")
    db.execute("SELECT * FROM a")
    db.execute("SELECT * FROM r")
    with pytest.raises(psycopg.errors.ExternalRoutineException, match="boom in pre_commit"):
        db.conn.commit()
    db.conn.autocommit = True
    assert db.one("SELECT count(*) FROM local") == 0
    assert events(db, "a")[-2:] == [("pre_commit",), ("rollback",)]


SCAN_ALL = ["SELECT * FROM r", "SELECT * FROM r2", "SELECT * FROM a"]


def test_a_postgres_error_swallowed_in_pre_commit_aborts_the_commit(logged: Db) -> None:
    db = logged
    db.foreign_table("r", "id int", "raiser.Raiser", where="swallow_pre_commit")
    db.conn.autocommit = False
    db.execute("INSERT INTO local VALUES (1)")
    db.execute("SELECT * FROM r")
    with pytest.raises(psycopg.errors.DivisionByZero):
        db.conn.commit()
    db.conn.autocommit = True
    assert db.one("SELECT count(*) FROM local") == 0
    assert db.one("SELECT 1") == 1


@pytest.mark.parametrize(
    ("where", "statements"),
    [
        ("commit", SCAN_ALL),
        ("rollback", [*SCAN_ALL, "ROLLBACK"]),
        ("sub_commit", [*SCAN_ALL, "SAVEPOINT s", "RELEASE s"]),
        ("sub_rollback", [*SCAN_ALL, "SAVEPOINT s", "ROLLBACK TO s"]),
        ("prepare", [*SCAN_ALL, "PREPARE TRANSACTION 'g2'"]),
    ],
)
def test_failures_after_the_point_of_no_return_are_warnings(
    logged: Db, where: str, statements: list[str]
) -> None:
    """Every other handler still hears of it, and the backend goes on."""
    db = logged
    db.foreign_table("r", "id int", "raiser.Raiser", where=where)
    db.foreign_table("r2", "id int", "raiser.Raiser", where=where, message="bang")
    warnings: list[str] = []
    db.conn.add_notice_handler(lambda d: warnings.append(f"{d.severity_nonlocalized}: {d.message_primary}"))
    db.execute("BEGIN")
    db.execute("INSERT INTO local VALUES (1)")
    for sql in statements:
        db.execute(sql)
    if statements[-1] not in ("ROLLBACK",) and not statements[-1].startswith("PREPARE"):
        db.execute("COMMIT")
    method = where
    assert f"WARNING: HandlerError: boom in {method}" in "\n".join(warnings)
    assert f"WARNING: HandlerError: bang in {method}" in "\n".join(warnings)
    names = [e[0] for e in events(db, "a")]
    assert method in names
    if where == "prepare":
        db.execute("COMMIT PREPARED 'g2'")
    assert db.one("SELECT count(*) FROM local") == (0 if where == "rollback" else 1)
    assert db.one("SELECT 1") == 1


def test_a_failing_sub_begin_fails_the_savepoint(logged: Db) -> None:
    db = logged
    db.foreign_table("r", "id int", "raiser.Raiser", where="sub_begin")
    db.conn.autocommit = False
    db.execute("SELECT * FROM r")
    with pytest.raises(psycopg.errors.ExternalRoutineException, match="boom in sub_begin"):
        db.execute("SAVEPOINT s")
    db.conn.rollback()
    db.conn.autocommit = True
    assert db.one("SELECT 1") == 1


def test_a_cursor_reads_one_scan_across_statements(logged: Db) -> None:
    db = logged
    rows = [{"id": i} for i in range(10)]
    db.memory_table("c", "id int", log=db.path("calls.log"), source=db.write_pickle("c.pkl", rows))
    with db.conn.transaction():
        db.execute("DECLARE cur CURSOR FOR SELECT id FROM c")
        assert db.execute("FETCH 3 FROM cur") == [(0,), (1,), (2,)]
        db.execute("SAVEPOINT s")
        assert db.execute("FETCH 2 FROM cur") == [(3,), (4,)]
        db.execute("RELEASE s")
        assert db.execute("FETCH 2 FROM cur") == [(5,), (6,)]
        db.execute("CLOSE cur")
    names = [e[0] for e in events(db, "c")]
    assert names.count("execute") == 1  # one scan, read in three statements
    closed = [c for c in db.log() if c["method"] == "scan_closed"]
    assert [c["taken"] for c in closed] == [7]  # CLOSE dropped the generator: its finally ran


def test_an_aborted_scan_is_closed(logged: Db) -> None:
    """A scan that an error interrupts is dropped with the query: the generator's finally runs."""
    db = logged
    rows = [{"id": i} for i in range(10)]
    db.memory_table("c", "id int", log=db.path("calls.log"), source=db.write_pickle("c.pkl", rows))
    with pytest.raises(psycopg.errors.DivisionByZero):
        db.execute("SELECT 10 / (5 - id) FROM c")
    assert [c["taken"] for c in db.log() if c["method"] == "scan_closed"] == [6]  # the 6th divided by 0
    # and a scan that stops early (LIMIT done by PostgreSQL) is closed at its end
    assert db.execute("SELECT id FROM c LIMIT 2") == [(0,), (1,)]
    assert [c["taken"] for c in db.log() if c["method"] == "scan_closed"] == [6, 2]
    assert events(db, "c")[-2:] == [("pre_commit",), ("commit",)]
