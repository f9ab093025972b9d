"""extension/pruning.c: prepared statements that prune partitions at executor start cost what they run.

Without the correction, the plan cache compares a generic plan costed as if every partition ran with
custom plans of one partition each, and plans every execution anew.
"""

from __future__ import annotations

import json

import pytest
from conftest import Db


def plan_of(db: Db, statement: str) -> dict:
    return db.execute(f"EXPLAIN (FORMAT JSON) {statement}")[0][0][0]["Plan"]


def appends(plan: dict) -> list[dict]:
    found = [plan] if plan["Node Type"] in ("Append", "Merge Append") else []
    for child in plan.get("Plans", []):
        found += appends(child)
    return found


@pytest.fixture
def hashed(db: Db) -> Db:
    db.execute("CREATE TABLE h (id int PRIMARY KEY, v text) PARTITION BY HASH (id)")
    for r in range(4):
        db.execute(f"CREATE TABLE h{r} PARTITION OF h FOR VALUES WITH (MODULUS 4, REMAINDER {r})")
    db.execute("INSERT INTO h SELECT g, 'v' || g FROM generate_series(1, 2000) g")
    db.execute("ANALYZE h")
    return db


def test_a_point_query_keeps_a_generic_plan_after_five_custom_ones(hashed: Db) -> None:
    db = hashed
    db.execute("PREPARE q(int) AS SELECT v FROM h WHERE id = $1")
    assert "$1" not in json.dumps(plan_of(db, "EXECUTE q(7)"))  # the first five are custom plans
    for i in range(2, 6):
        assert db.execute(f"EXECUTE q({i * 7})") == [(f"v{i * 7}",)]
    # the sixth chooses: the generic plan, pruned at executor start, with the same answers
    plan = plan_of(db, "EXECUTE q(11)")
    assert plan["Node Type"] == "Append" and plan["Subplans Removed"] == 3, plan
    assert "$1" in json.dumps(plan)
    for i in (1, 2, 3, 4, 999, 5000):
        assert db.execute(f"EXECUTE q({i})") == ([(f"v{i}",)] if i <= 2000 else [])


def test_the_append_costs_its_cheapest_subplan_and_the_nodes_above_it_follow(hashed: Db) -> None:
    db = hashed
    db.execute("SET plan_cache_mode = force_generic_plan")
    db.execute("PREPARE c(int) AS SELECT count(*) FROM h WHERE id = $1")
    aggregate = plan_of(db, "EXECUTE c(1)")
    [append] = appends(aggregate)
    assert append["Subplans Removed"] == 3
    # planned with every partition, of which one survives: it shows the cost of one
    db.execute("SET plan_cache_mode = force_custom_plan")
    custom = plan_of(db, "EXECUTE c(1)")
    assert append["Total Cost"] == pytest.approx(custom["Plans"][0]["Total Cost"], rel=0.05)
    assert aggregate["Total Cost"] == pytest.approx(custom["Total Cost"], rel=0.05)
    assert aggregate["Total Cost"] >= append["Total Cost"]


def test_writes_and_locking_reads_keep_custom_plans(hashed: Db) -> None:
    """Only plain SELECTs are corrected (extension/pruning.c says why): an UPDATE, a DELETE and a
    SELECT ... FOR UPDATE stay custom plans, pruned when planned."""
    db = hashed
    for name, statement in [("u", "UPDATE h SET v = v WHERE id = $1"), ("d", "DELETE FROM h WHERE id = -$1"),
                            ("f", "SELECT v FROM h WHERE id = $1 FOR UPDATE")]:
        db.execute(f"PREPARE {name}(int) AS {statement}")
        for i in range(1, 8):
            db.execute(f"EXECUTE {name}({i})")
        plan = json.dumps(plan_of(db, f"EXECUTE {name}(3)"))
        assert "Subplans Removed" not in plan and "$1" not in plan, (statement, plan)


def test_force_custom_plan_still_plans_each_execution(hashed: Db) -> None:
    db = hashed
    db.execute("SET plan_cache_mode = force_custom_plan")
    db.execute("PREPARE q(int) AS SELECT v FROM h WHERE id = $1")
    for i in range(1, 9):
        plan = plan_of(db, f"EXECUTE q({i})")
    assert "$1" not in json.dumps(plan) and plan["Node Type"] != "Append"


def test_a_range_keeps_a_third_of_the_cost(db: Db) -> None:
    db.execute("CREATE TABLE r (at date, v int) PARTITION BY RANGE (at)")
    for m in range(1, 7):
        db.execute(f"CREATE TABLE r{m} PARTITION OF r FOR VALUES FROM ('2026-{m:02}-01') TO "
                   f"('2026-{m + 1:02}-01')")
    db.execute("INSERT INTO r SELECT d, 1 FROM generate_series('2026-01-01'::date, '2026-06-30', '1 hour') d")
    db.execute("ANALYZE r")
    db.execute("SET plan_cache_mode = force_generic_plan")
    db.execute("PREPARE q(date) AS SELECT v FROM r WHERE at >= $1")
    [append] = appends(plan_of(db, "EXECUTE q('2026-05-01')"))
    # the months are alike: the Append costs about a third of six of them
    assert append["Subplans Removed"] == 4
    month = sum(child["Total Cost"] for child in append["Plans"]) / 2
    assert append["Total Cost"] == pytest.approx(6 * month / 3, rel=0.15)
    assert len(db.execute("EXECUTE q('2026-06-30')")) == 1


def test_statements_without_runtime_pruning_keep_their_costs(hashed: Db) -> None:
    db = hashed
    db.execute("SET plan_cache_mode = force_generic_plan")
    db.execute("PREPARE s(text) AS SELECT id FROM h WHERE v = $1")  # not on the key: no pruning
    [append] = appends(plan_of(db, "EXECUTE s('v1')"))
    assert append.get("Subplans Removed", 0) == 0
    whole = sum(child["Total Cost"] for child in append["Plans"])
    assert append["Total Cost"] >= whole


def test_a_mix_of_local_and_foreign_partitions_answers_right_under_a_generic_plan(db: Db) -> None:
    db.execute("CREATE TABLE m (id int, v text) PARTITION BY HASH (id)")
    db.execute("CREATE TABLE m0 PARTITION OF m FOR VALUES WITH (MODULUS 2, REMAINDER 0)")
    db.memory_table("m1", "id int, v text")
    db.execute("ALTER TABLE m ATTACH PARTITION m1 FOR VALUES WITH (MODULUS 2, REMAINDER 1)")
    db.execute("INSERT INTO m SELECT g, 'v' || g FROM generate_series(1, 50) g")
    db.execute("PREPARE q(int) AS SELECT v FROM m WHERE id = $1")
    for i in list(range(1, 51)) + [77]:
        assert db.execute(f"EXECUTE q({i})") == ([(f"v{i}",)] if i <= 50 else [])
    plan = plan_of(db, "EXECUTE q(3)")
    assert plan["Node Type"] == "Append" and plan["Subplans Removed"] == 1, plan
