"""The host does not leak: a backend's memory stays flat over repeated work.

The resident memory of the backend serving the test's connection (``/proc/<pid>/status``: VmRSS,
and RssAnon, its private part, which shared buffers do not blur) is read after a warm-up and again
after repeating the same work; it may grow only by a small bound.  Covered: scanning 100k rows
through Python rows (sequences and dicts) and through binary data, inserting 100k rows, and many
small statements (planning, quals, EXPLAIN, a nested loop's rescans, errors), where a leak per
statement would show.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from conftest import Db

MB = 1024 * 1024


def memory_of(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon of a process, in bytes."""
    result = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            result[key] = int(value.split()[0]) * 1024
    return result


def assert_flat(db: Db, work: Callable[[], None], rounds: int, bound: int = 2 * MB) -> None:
    """Warm up with two rounds of work, then check that more rounds do not grow the backend."""
    pid = db.backend_pid
    for _ in range(2):
        work()
    before = memory_of(pid)
    for _ in range(rounds):
        work()
    after = memory_of(pid)
    grown = {k: after[k] - before[k] for k in before}
    assert grown["RssAnon"] < bound, f"backend grew by {grown} over {rounds} rounds"
    assert grown["VmRSS"] < 2 * bound, f"backend grew by {grown} over {rounds} rounds"


@pytest.mark.parametrize("row_format", ["sequence", "dict", "binary"])
def test_scanning_100k_rows_repeatedly(db: Db, row_format: str) -> None:
    db.memory_table("ft", "id int, name text, value float8", generate=100_000, row_format=row_format)

    def scan() -> None:
        assert db.execute("SELECT count(*), sum(id), max(name), sum(value) FROM ft") == [
            (100_000, 4_999_950_000, "row 99999", 2_499_975_000.0)
        ]

    assert_flat(db, scan, rounds=4)


def test_inserting_100k_rows_repeatedly(db: Db) -> None:
    # Raiser's insert() keeps nothing: any growth is the host's
    db.foreign_table("sink", "id int, t text, n numeric", "raiser.Raiser", where="none")

    def insert() -> None:
        db.execute("INSERT INTO sink SELECT g, 'row ' || g, g / 7.0 FROM generate_series(1, 100000) g")

    assert_flat(db, insert, rounds=3)


def test_many_small_statements(db: Db) -> None:
    db.execute("CREATE TABLE keys AS SELECT g AS k FROM generate_series(1, 50) g")
    db.memory_table("ft", "id int, name text, value float8", generate=20, row_format="binary",
                    path_keys="id")
    db.foreign_table("bad", "id int", "raiser.Raiser", where="iterate")
    db.execute("SET enable_hashjoin = off")
    db.execute("SET enable_mergejoin = off")
    db.execute("PREPARE q(int) AS SELECT name FROM ft WHERE id = $1 AND name LIKE 'row%'")

    def statements() -> None:
        for i in range(40):
            assert db.execute("SELECT name FROM ft WHERE id = %s AND value >= 0", (i % 20,)) == [
                (f"row {i % 20}",)
            ]
            assert db.execute(f"EXECUTE q({i % 20})") == [(f"row {i % 20}",)]
            db.explain("SELECT * FROM ft WHERE id IN (1, 2, 3) ORDER BY name")
            with pytest.raises(psycopg.errors.ExternalRoutineException):
                db.execute("SELECT * FROM bad")
        # a nested loop: one rescan per outer row
        assert db.one("SELECT count(*) FROM keys JOIN ft ON ft.id = keys.k") == 19

    assert_flat(db, statements, rounds=6)


def test_rescans_of_a_nested_loop_do_not_grow_the_query_memory(db: Db) -> None:
    """Each rescan starts a new scan in the query's memory (ExecutorState): it must not grow."""
    db.execute("CREATE TABLE keys AS SELECT g AS k FROM generate_series(1, 1500) g")
    db.execute("ANALYZE keys")
    db.memory_table("ft", "id int, name text, value float8", generate=3, row_format="binary",
                    path_keys="id", probe_memory="ExecutorState", rows=1_000_000,
                    log=db.path("calls.log"))
    db.execute("SET enable_hashjoin = off")
    db.execute("SET enable_mergejoin = off")
    db.execute("SET enable_material = off")
    plan = db.explain("SELECT count(*) FROM keys JOIN ft ON ft.id = keys.k")
    assert "Nested Loop" in plan and "Filter Hints: ($1 = id)" in plan, plan  # a parameterized scan
    assert db.one("SELECT count(*) FROM keys JOIN ft ON ft.id = keys.k") == 2
    sizes = [c["bytes"] for c in db.log() if c["method"] == "memory"]
    assert len(sizes) == 1500
    assert sizes[-1] - sizes[100] < 64 * 1024, f"ExecutorState grew from {sizes[100]} to {sizes[-1]}"
