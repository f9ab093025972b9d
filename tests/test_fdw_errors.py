"""Failures inside handlers and in their configuration, and that the backend survives them.

* A Python exception anywhere in a handler is an SQL ERROR carrying the Python message, with the
  traceback in DETAIL (or the exception's own SQLSTATE and hint); the same connection then runs
  further queries, handlers included.
* A PostgreSQL error that handler code swallows is still reported.
* Rows or binary data of the wrong shape are clear errors.
* Query cancel (pg_cancel_backend from another connection) and statement_timeout interrupt a handler
  blocked in time.sleep, in ``_shoal_pg.wait`` or in a pure-Python loop, promptly, with the usual
  canceling errors; the backend is healthy afterwards.
* Bad options: an unknown option on a node server, negative or non-numeric costs, a wrapper that
  cannot be imported, is not a class of the right kind, or rejects its own options.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest
from conftest import Db, connect_db

# -- exceptions ----------------------------------------------------------------------------------


def assert_healthy(db: Db) -> None:
    """The same backend answers plain queries and runs handlers again."""
    assert db.one("SELECT 1") == 1
    db.memory_table("healthy_check", "id int", source=db.write_pickle("h.pkl", [{"id": 7}]))
    assert db.execute("SELECT id FROM healthy_check") == [(7,)]
    db.execute("DROP FOREIGN TABLE healthy_check")


@pytest.mark.parametrize(
    ("where", "message", "context"),
    [
        ("execute", "HandlerError: boom in execute", "Python: execute"),
        ("iterate", "HandlerError: boom while iterating", "Python: execute"),
        ("init", "HandlerError: boom in __init__", "creating the handler of foreign table ft"),
        ("rel_size", "HandlerError: boom in get_rel_size", "Python: get_rel_size"),
    ],
)
def test_an_exception_is_an_error_with_the_traceback(db: Db, where: str, message: str, context: str) -> None:
    pid = db.backend_pid
    db.foreign_table("ft", "id int", "raiser.Raiser", where=where)
    with pytest.raises(psycopg.errors.ExternalRoutineException) as info:
        db.execute("SELECT * FROM ft")
    diag = info.value.diag
    assert diag.message_primary == message
    assert diag.message_detail is not None
    assert diag.message_detail.startswith("Traceback (most recent call last):")
    assert "raiser.py" in diag.message_detail and "in _fail" in diag.message_detail
    assert diag.message_detail.rstrip().endswith(message)
    assert context in (diag.context or "")
    assert db.backend_pid == pid
    assert_healthy(db)
    # a fixed handler works in the same session: the failed one is not kept
    db.execute("ALTER FOREIGN TABLE ft OPTIONS (SET where 'none')")
    assert sorted(db.execute("SELECT * FROM ft")) == [(1,), (2,)]


def test_an_exception_in_a_transaction_aborts_it_and_the_session_goes_on(db: Db) -> None:
    db.foreign_table("ft", "id int", "raiser.Raiser", where="insert")
    db.execute("CREATE TABLE local (x int)")
    db.conn.autocommit = False
    db.execute("INSERT INTO local VALUES (1)")
    with pytest.raises(psycopg.errors.ExternalRoutineException, match="boom in insert"):
        db.execute("INSERT INTO ft VALUES (1)")
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        db.execute("SELECT 1")
    db.conn.rollback()
    db.conn.autocommit = True
    assert db.one("SELECT count(*) FROM local") == 0
    assert_healthy(db)


def test_an_exception_with_a_sqlstate_reads_as_that_error(db: Db) -> None:
    db.foreign_table("ft", "id int", "raiser.Raiser", where="sqlstate")
    with pytest.raises(psycopg.errors.DivisionByZero) as info:
        db.execute("SELECT * FROM ft")
    assert info.value.diag.message_primary == "boom with a code"
    assert info.value.diag.message_hint == "Divide less."
    assert_healthy(db)


def test_a_postgres_error_swallowed_by_the_handler_is_still_raised(db: Db) -> None:
    db.foreign_table("ft", "id int", "raiser.Raiser", where="swallow")
    with pytest.raises(psycopg.errors.DivisionByZero):
        db.execute("SELECT * FROM ft")
    assert_healthy(db)


@pytest.mark.parametrize(
    ("where", "error", "match"),
    [
        ("bad_row", psycopg.errors.FdwInvalidDataType, "has 5 values, expected 1"),
        ("bad_value", psycopg.errors.InvalidTextRepresentation, "invalid input syntax for type integer"),
        ("bad_binary", psycopg.errors.BadCopyFileFormat, "ended inside a tuple"),
    ],
)
def test_bad_rows_are_errors(db: Db, where: str, error: type[Exception], match: str) -> None:
    db.foreign_table("ft", "id int", "raiser.Raiser", where=where)
    with pytest.raises(error, match=match):
        db.execute("SELECT * FROM ft")
    assert_healthy(db)


def test_bad_binary_headers_and_field_counts(db: Db) -> None:
    db.execute("CREATE TABLE ref (a int, b text)")
    db.execute("INSERT INTO ref VALUES (1, 'x')")
    data = db.copy_binary("SELECT * FROM ref")
    cases = {
        "truncated.bin": (data[:7], "ended inside a COPY header"),
        "signature.bin": (b"PGCOPX" + data[6:], "invalid COPY signature"),
        "three.bin": (db.copy_binary("SELECT 1, 'x'::text, 2"), "binary tuple has 3 fields, expected 2"),
        "negative.bin": (data[:19] + b"\xff\xfe" + data[21:], "negative field count"),
    }
    for name, (blob, message) in cases.items():
        path = db.dir / name
        path.write_bytes(blob)
        table = name.split(".")[0]
        db.memory_table(table, "a int, b text", binary_source=str(path), row_format="binary",
                        chunk_size=5, framing="raw")
        with pytest.raises(psycopg.errors.BadCopyFileFormat, match=message):
            db.execute(f"SELECT * FROM {table}")
    assert_healthy(db)


# -- cancel and statement_timeout ----------------------------------------------------------------

BLOCKING = [("sleep", "execute"), ("pgwait", "execute"), ("spin", "execute"), ("sleep", "iterate"),
            ("pgwait", "iterate")]


def run_in_thread(db: Db, query: str) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}

    def run() -> None:
        start = time.monotonic()
        try:
            outcome["rows"] = db.execute(query)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize(("how", "where"), BLOCKING)
def test_cancel_interrupts_a_blocked_handler(db: Db, how: str, where: str) -> None:
    marker = db.dir / "blocking"
    db.foreign_table("slow", "id int", "sleeper.Sleeper", how=how, where=where, seconds=60,
                     marker=str(marker))
    pid = db.backend_pid
    thread, outcome = run_in_thread(db, "SELECT * FROM slow")
    wait_for(marker)
    time.sleep(0.1)  # well inside the wait
    with connect_db(db.server, db.schema) as other:
        canceled_at = time.monotonic()
        assert other.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone() == (True,)
        thread.join(10)
        took = time.monotonic() - canceled_at
    assert not thread.is_alive(), "the query did not end"
    assert isinstance(outcome.get("error"), psycopg.errors.QueryCanceled), outcome
    assert "canceling statement due to user request" in str(outcome["error"])
    assert took < 3, f"the cancel took {took:.1f}s"
    assert db.backend_pid == pid
    assert_healthy(db)
    # and the same handler runs to completion when nobody cancels it
    db.execute("ALTER FOREIGN TABLE slow OPTIONS (SET seconds '0.05')")
    assert db.execute("SELECT * FROM slow") in ([(1,)], [(1,), (2,)])


@pytest.mark.parametrize(("how", "where"), BLOCKING)
def test_statement_timeout_interrupts_a_blocked_handler(db: Db, how: str, where: str) -> None:
    db.foreign_table("slow", "id int", "sleeper.Sleeper", how=how, where=where, seconds=60)
    db.execute("SET statement_timeout = '300ms'")
    start = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled, match="canceling statement due to statement timeout"):
        db.execute("SELECT * FROM slow")
    assert time.monotonic() - start < 3
    db.execute("RESET statement_timeout")
    assert_healthy(db)


def test_a_cancel_is_not_swallowed_by_except_exception(db: Db) -> None:
    """QueryCanceled is a BaseException: `except Exception` in handler code lets it through."""
    db.foreign_table("slow", "id int", "sleeper.Sleeper", how="pgwait", seconds=60, where="swallow")
    db.execute("SET statement_timeout = '200ms'")
    with pytest.raises(psycopg.errors.QueryCanceled):
        db.execute("SELECT * FROM slow")
    db.execute("RESET statement_timeout")
    assert_healthy(db)


def test_terminating_a_blocked_backend_leaves_the_server_running(db: Db) -> None:
    marker = db.dir / "blocking"
    db.foreign_table("slow", "id int", "sleeper.Sleeper", how="sleep", seconds=60, marker=str(marker))
    pid = db.backend_pid
    thread, outcome = run_in_thread(db, "SELECT * FROM slow")
    wait_for(marker)
    with connect_db(db.server, db.schema) as other:
        assert other.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone() == (True,)
        thread.join(10)
        assert not thread.is_alive()
        assert isinstance(outcome.get("error"), psycopg.OperationalError)
        gone = other.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        assert gone == (0,)
        assert other.execute("SELECT 1").fetchone() == (1,)  # no crash: the postmaster did not restart


# -- bad options ---------------------------------------------------------------------------------


def server_error(db: Db, options: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        db.execute(f"CREATE SERVER bad_{db.schema} FOREIGN DATA WRAPPER shoal_fdw OPTIONS ({options})")
    return info.value


def test_unknown_option_on_a_node_server(db: Db) -> None:
    error = server_error(db, "node 'n1', bogus '1'")
    assert isinstance(error, psycopg.errors.FdwInvalidOptionName)
    assert error.diag.message_primary == 'invalid option "bogus" for a shoal node server'
    assert "Valid options: " in (error.diag.message_hint or "")
    assert "node" in (error.diag.message_hint or "")


@pytest.mark.parametrize("value", ["-1", "abc", "", "nan", "-inf"])
def test_costs_must_be_non_negative_numbers(db: Db, value: str) -> None:
    error = server_error(db, f"node 'n1', startup_cost '{value}'")
    assert error.sqlstate == "HV024"
    assert 'option "startup_cost" must be a non-negative number' in str(error)
    db.memory_table("ft", "id int")
    with pytest.raises(psycopg.Error, match='option "tuple_cost" must be a non-negative number'):
        db.execute(f"ALTER FOREIGN TABLE ft OPTIONS (ADD tuple_cost '{value}')")
    # valid values are accepted
    db.execute("ALTER FOREIGN TABLE ft OPTIONS (ADD tuple_cost '0.5', startup_cost '10')")


@pytest.mark.parametrize(
    ("wrapper", "message"),
    [
        ("no_such_module.Handler", 'cannot import module "no_such_module"'),
        ("nodots", 'wrapper "nodots" is not of the form package.module.Class'),
        ("memory.NoSuchClass", 'wrapper "memory.NoSuchClass": module "memory" has no class "NoSuchClass"'),
        ("raiser.NotAHandler", '"raiser.NotAHandler" is not a subclass of shoal.fdw.ForeignDataWrapper'),
        ("broken.Handler", "this handler module is broken on purpose"),
    ],
)
def test_a_bad_wrapper_is_refused(db: Db, wrapper: str, message: str) -> None:
    for sql in (
        f"CREATE SERVER bad_{db.schema} FOREIGN DATA WRAPPER shoal_fdw OPTIONS (wrapper '{wrapper}')",
        f"CREATE FOREIGN TABLE ft (id int) SERVER handlers OPTIONS (wrapper '{wrapper}')",
    ):
        with pytest.raises(psycopg.Error) as info:
            db.execute(sql)
        assert message in str(info.value)
    assert_healthy(db)


def test_wrapper_and_node_exclude_each_other(db: Db) -> None:
    error = server_error(db, "wrapper 'memory.MemoryHandler', node 'n1'")
    assert error.sqlstate == "HV00D"
    assert 'options "wrapper" and "node" exclude each other' in str(error)


def test_a_wrapper_validates_its_own_options(db: Db) -> None:
    with pytest.raises(psycopg.Error, match='option "size" must be a positive integer, not "-3"'):
        db.foreign_table("ft", "id int", "raiser.Picky", size="-3")
    db.foreign_table("ft", "id int", "raiser.Picky", size="3")
    assert db.execute("SELECT * FROM ft") == [(3,)]


def test_empty_names_are_refused(db: Db) -> None:
    with pytest.raises(psycopg.Error, match='option "table_name" must not be empty'):
        db.execute("CREATE FOREIGN TABLE ft (id int) SERVER handlers OPTIONS (table_name '')")
    with pytest.raises(psycopg.Error, match='option "column_name" must not be empty'):
        db.execute("CREATE FOREIGN TABLE ft (id int OPTIONS (column_name '')) SERVER handlers")
