"""What the planner hands a handler, as EXPLAIN shows it and as the handler receives it.

``pushdown.SqlTable`` enforces its quals exactly, sorts and limits (it runs the SQL it is given
against a local table), so quals, sort keys and LIMIT/OFFSET are pushed down to it; the memory
handler only gets quals as hints, which PostgreSQL re-checks.  Every query's result is compared with
the same query on the local table.  Covers: simple and complex quals, what stays local (volatile and
stable functions), sort and limit pushdown and when limit must not be pushed, the parameterized path
of a nested loop, prepared statements with ``$1`` (generic plans), IN lists, the columns requested.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Db

from shoal.fdw import ParamValue

SRC_COLUMNS = "id int, grp int, name text, val numeric, flag bool, tags text[]"


@pytest.fixture
def src(db: Db) -> Db:
    """A local table ``src`` and two foreign tables over the same rows: ``ft`` (exact, SqlTable)
    and ``mt`` (memory handler, quals as hints)."""
    db.execute(f"CREATE TABLE src ({SRC_COLUMNS})")
    db.execute(
        "INSERT INTO src SELECT g, g % 7, CASE WHEN g % 10 = 0 THEN NULL ELSE 'név ' || g END,"
        " g * 1.5, CASE WHEN g % 3 = 0 THEN NULL ELSE g % 2 = 0 END, ARRAY['t' || (g % 4)]"
        " FROM generate_series(1, 200) g"
    )
    db.execute("ANALYZE src")
    db.foreign_table("ft", SRC_COLUMNS, "pushdown.SqlTable", table=f"{db.schema}.src",
                     log=db.path("calls.log"), path_keys="id")
    with db.conn.cursor() as cur:
        names = [d.name for d in cur.execute("SELECT * FROM src LIMIT 0").description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.execute("SELECT * FROM src").fetchall()]
    db.memory_table("mt", SRC_COLUMNS, source=db.write_pickle("src.pkl", rows), log=db.path("calls.log"))
    return db


def executes(db: Db) -> list[dict[str, Any]]:
    return [c for c in db.log() if c["method"] == "execute"]


def same_as_local(db: Db, query: str, ordered: bool = False) -> list[tuple]:
    """Run query on ft/mt and on src; they must agree. Returns the rows."""
    local = query.replace(" ft", " src").replace(" mt", " src")
    got, expected = db.execute(query), db.execute(local)
    if not ordered:
        got, expected = sorted(got, key=repr), sorted(expected, key=repr)
    assert got == expected
    return got


WHERE_CLAUSES = [
    "id = 5",
    "5 = id",
    "id < 10",
    "id >= 195",
    "id <> 1 AND id < 4",
    "name = 'név 11'",
    "name LIKE 'név 1%'",
    "name IS NULL",
    "name IS NOT NULL AND id < 30",
    "flag",
    "NOT flag",
    "flag IS NULL",
    "val > 100.5",
    "id IN (1, 2, 3, 500)",
    "id NOT IN (1, 2, 3)",
    "name IN ('név 1', 'név 2')",
    "tags @> ARRAY['t1']",
    "id % 50 = 0 OR name = 'név 3'",
    "id + grp > 190",
    "lower(name) = 'név 7'",
]


@pytest.mark.parametrize("where", WHERE_CLAUSES)
def test_exact_quals_are_pushed_and_not_rechecked(src: Db, where: str) -> None:
    db = src
    plan = db.explain(f"SELECT * FROM ft WHERE {where}")
    assert "Pushed Filter: " in plan
    assert "\n  Filter: " not in plan, plan  # nothing left for PostgreSQL to check
    rows = same_as_local(db, f"SELECT * FROM ft WHERE {where}")
    assert rows, "the clause should select something"
    quals = executes(db)[-1]["quals"]
    assert quals, "the handler got no quals"


@pytest.mark.parametrize("where", WHERE_CLAUSES)
def test_hints_are_rechecked_by_postgres(src: Db, where: str) -> None:
    """The memory handler ignores its quals: PostgreSQL's own Filter still gives the right rows."""
    db = src
    plan = db.explain(f"SELECT * FROM mt WHERE {where}")
    assert "\n  Filter: " in plan
    same_as_local(db, f"SELECT * FROM mt WHERE {where}")


def test_simple_quals_arrive_as_multicorn_quals(src: Db) -> None:
    db = src
    db.execute(
        "SELECT * FROM ft WHERE id < 50 AND name IS NOT NULL AND flag AND grp IN (1, 2)"
        " AND id NOT IN (3, 4) AND 10 < id AND id + grp > 12"
    )
    quals = {(f, op, repr(v)): sql for f, op, v, sql in executes(db)[-1]["quals"]}
    assert quals == {
        ("id", "<", "50"): "(id < 50)",
        ("name", "<>", "None"): "(name IS NOT NULL)",
        ("flag", "=", "True"): "flag",
        ("grp", ("=", True), "[1, 2]"): "(grp = ANY ('{1,2}'::integer[]))",
        ("id", ("<>", False), "[3, 4]"): "(id <> ALL ('{3,4}'::integer[]))",
        ("id", ">", "10"): "(10 < id)",  # commuted for the qual; the SQL is as written
        (None, None, "None"): "((id + grp) > 12)",  # only exact handlers get these
    }
    # the memory handler gets the simple ones only
    db.execute("SELECT * FROM mt WHERE id < 50 AND id + grp > 12 AND NOT flag AND name IS NULL")
    assert sorted((f, op, repr(v)) for f, op, v, _ in executes(db)[-1]["quals"]) == [
        ("flag", "=", "False"),
        ("id", "<", "50"),
        ("name", "=", "None"),
    ]


@pytest.mark.parametrize(
    "where",
    [
        "val > random() * 100",  # volatile: a new value for each row
        "name > 'név 5' COLLATE \"ucs_basic\"",  # a collation that may not exist elsewhere
    ],
)
def test_unsafe_clauses_stay_local(src: Db, where: str) -> None:
    db = src
    plan = db.explain(f"SELECT * FROM ft WHERE {where} AND id < 100")
    assert "Pushed Filter: (id < 100)" in plan, plan
    assert "\n  Filter: " in plan
    if "random" in where:
        assert len(db.execute(f"SELECT * FROM ft WHERE {where} AND id < 100")) < 99
    else:
        same_as_local(db, f"SELECT * FROM ft WHERE {where} AND id < 100")
    assert [q[0] for q in executes(db)[-1]["quals"]] == ["id"]


@pytest.mark.parametrize(
    ("where", "pushed"),
    [
        ("name <> current_user", "(name <> $1)"),
        ("id::text = to_char(now(), 'YYYY')", "((id)::text = $1)"),
        ("id = (ARRAY[3, 4, 5])[grp % 2 + 1]", None),  # reads the row: an array element of it ships
        ("id < (SELECT max(id) FROM src) - 90", "(id < $1)"),  # the subquery is run here, once
    ],
)
def test_stable_values_are_computed_here_and_ship(src: Db, where: str, pushed: str | None) -> None:
    """What a clause computes from anything but the row (now(), current_user, a subquery's
    result) is computed here once and travels as a parameter, as a constant would."""
    db = src
    plan = db.explain(f"SELECT * FROM ft WHERE {where} AND id < 100")
    assert "\n  Filter: " not in plan, plan
    if pushed is not None:
        assert pushed in plan, plan
    same_as_local(db, f"SELECT * FROM ft WHERE {where} AND id < 100")
    assert len(executes(db)[-1]["quals"]) == 2


def test_a_value_read_for_some_rows_only_is_not_computed_for_all(src: Db) -> None:
    """PostgreSQL computes a CASE arm only for the rows that reach it: shoal does not compute
    it here for all of them, where it could fail when no row needs it."""
    db = src
    for table in ("src", "ft"):
        db.execute(f"PREPARE some_rows_{table}(text) AS SELECT id FROM {table} WHERE "
                   "CASE WHEN id > 1000 THEN val > to_number($1, '999') ELSE id < 3 END ORDER BY id")
        assert db.execute(f"EXECUTE some_rows_{table}('x')") == [(1,), (2,)]
        db.execute(f"DEALLOCATE some_rows_{table}")
    assert executes(db)[-1]["quals"] == []  # to_number is stable: the clause stayed here


def test_the_columns_requested(src: Db) -> None:
    db = src
    db.execute("SELECT name FROM ft WHERE id = 5")
    assert executes(db)[-1]["columns"] == ["name"]  # exact: id is checked by the handler
    db.execute("SELECT name FROM mt WHERE id = 5")
    assert executes(db)[-1]["columns"] == ["id", "name"]  # hints: PostgreSQL checks id itself
    db.execute("SELECT count(*) FROM ft")
    assert executes(db)[-1]["columns"] == []
    db.execute("SELECT t FROM ft t WHERE t.id = 1")  # whole row
    assert executes(db)[-1]["columns"] == ["id", "grp", "name", "val", "flag", "tags"]


@pytest.mark.parametrize(
    "order",
    ["id", "id DESC", "name, id", "name DESC NULLS LAST, id DESC", "flag NULLS FIRST, id",
     "name COLLATE \"C\" DESC, id", "val DESC"],
)
def test_sort_is_pushed(src: Db, order: str) -> None:
    db = src
    plan = db.explain(f"SELECT * FROM ft ORDER BY {order}")
    assert "Pushed Sort: " in plan, plan
    assert "Sort Key" not in plan  # no Sort node above the scan
    same_as_local(db, f"SELECT * FROM ft ORDER BY {order}", ordered=True)
    assert executes(db)[-1]["sortkeys"]


def test_sort_keys_as_the_handler_sees_them(src: Db) -> None:
    db = src
    db.execute('SELECT * FROM ft ORDER BY name COLLATE "C" DESC NULLS LAST, id')
    keys = executes(db)[-1]["sortkeys"]
    assert [(k.attname, k.attnum, k.is_reversed, k.nulls_first, k.collate) for k in keys] == [
        ("name", 3, True, False, "C"),
        ("id", 1, False, False, None),
    ]
    assert "Pushed Sort: name DESC NULLS LAST, id" in db.explain(
        'SELECT * FROM ft ORDER BY name COLLATE "C" DESC NULLS LAST, id'
    )


def test_sort_by_an_expression_stays_local(src: Db) -> None:
    db = src
    plan = db.explain("SELECT * FROM ft ORDER BY id % 7, id")
    assert "Pushed Sort" not in plan and "Sort Key" in plan
    same_as_local(db, "SELECT * FROM ft ORDER BY id % 7, id", ordered=True)
    # the memory handler cannot sort: PostgreSQL does
    plan = db.explain("SELECT * FROM mt ORDER BY id")
    assert "Pushed Sort" not in plan and "Sort Key" in plan
    same_as_local(db, "SELECT * FROM mt ORDER BY id", ordered=True)


@pytest.mark.parametrize(
    ("query", "limit"),
    [
        ("SELECT * FROM ft ORDER BY id LIMIT 5", 5),
        ("SELECT * FROM ft ORDER BY name DESC NULLS LAST, id LIMIT 5 OFFSET 3", 8),
        ("SELECT * FROM ft WHERE grp = 3 ORDER BY id LIMIT 4", 4),
        ("SELECT id FROM ft WHERE id > 190 LIMIT 100", 100),
    ],
)
def test_limit_is_pushed(src: Db, query: str, limit: int) -> None:
    db = src
    plan = db.explain(query)
    assert f"Pushed Limit: {limit}" in plan, plan
    same_as_local(db, query, ordered="ORDER BY" in query)
    assert executes(db)[-1]["limit"] == limit


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM ft WHERE val > random() LIMIT 5",  # a local filter could drop rows
        "SELECT grp, count(*) FROM ft GROUP BY grp ORDER BY grp LIMIT 2",
        "SELECT DISTINCT grp FROM ft ORDER BY grp LIMIT 2",
        "SELECT * FROM ft JOIN generate_series(1, 10) g ON g = ft.grp ORDER BY id LIMIT 2",
        "SELECT * FROM ft ORDER BY id % 7, id LIMIT 3",  # the sort is local
        "SELECT * FROM mt ORDER BY id LIMIT 3",  # not an exact handler
        "SELECT * FROM ft ORDER BY id FETCH FIRST 3 ROWS WITH TIES",
    ],
)
def test_limit_is_not_pushed_when_unsafe(src: Db, query: str) -> None:
    db = src
    assert "Pushed Limit" not in db.explain(query)
    if "random" not in query:
        same_as_local(db, query, ordered="ORDER BY" in query)
    assert all(c["limit"] is None for c in executes(db))


def test_nested_loop_pushes_the_outer_value(src: Db) -> None:
    db = src
    db.execute("CREATE TABLE keys (k int)")
    db.execute("INSERT INTO keys VALUES (3), (77), (150), (999)")
    db.execute("ANALYZE keys")
    db.execute("ALTER FOREIGN TABLE ft OPTIONS (ADD rows '1000000')")
    query = "SELECT k, ft.id, ft.name FROM keys JOIN ft ON ft.id = keys.k"
    plan = db.explain(query)
    assert "Nested Loop" in plan, plan
    assert "Pushed Filter: ($1 = id)" in plan or "Pushed Filter: (id = $1)" in plan, plan
    before = len(executes(db))
    assert sorted(same_as_local(db, query)) == [(3, 3, "név 3"), (77, 77, "név 77"), (150, 150, None)]
    calls = executes(db)[before:]
    assert sorted(c["params"][0] for c in calls) == [3, 77, 150, 999]  # one scan per outer row
    assert all(c["quals"][0][:2] == ("id", "=") and c["quals"][0][2] == c["params"][0] for c in calls)


def test_prepared_statement_params_are_pushed(src: Db) -> None:
    db = src
    db.execute("SET plan_cache_mode = force_generic_plan")
    db.execute("PREPARE q(int, text) AS SELECT id, name FROM ft WHERE id < $1 AND name <> $2")
    plan = db.explain("EXECUTE q(10, 'név 3')")
    assert "Pushed Filter: (id < $1) AND (name <> $2)" in plan, plan
    assert sorted(db.execute("EXECUTE q(10, 'név 3')")) == [
        (i, f"név {i}") for i in range(1, 10) if i != 3
    ]
    call = executes(db)[-1]
    assert call["params"] == [10, "név 3"]
    assert [q[:3] for q in call["quals"]] == [("id", "<", 10), ("name", "<>", "név 3")]
    assert db.execute("EXECUTE q(3, 'x')") == [(1, "név 1"), (2, "név 2")]
    # at planning time the values are unknown: get_rel_size saw placeholders for $1 and $2
    sizes = [c for c in db.log() if c["method"] == "get_rel_size"]
    assert sorted(q[:3] for q in sizes[-1]["quals"]) == [
        ("id", "<", ParamValue(1)),
        ("name", "<>", ParamValue(2)),
    ]


def test_prepared_in_list_with_an_array_param(src: Db) -> None:
    db = src
    db.execute("SET plan_cache_mode = force_generic_plan")
    db.execute("PREPARE q(text[]) AS SELECT id FROM ft WHERE name = ANY($1) ORDER BY id")
    assert db.execute("EXECUTE q(ARRAY['név 4', 'név 9', 'none'])") == [(4,), (9,)]
    call = executes(db)[-1]
    assert call["quals"][0][:3] == ("name", ("=", True), ["név 4", "név 9", "none"])
    # IN with parameters
    db.execute("PREPARE r(int, int) AS SELECT id FROM ft WHERE id IN ($1, $2) ORDER BY id")
    assert db.execute("EXECUTE r(5, 6)") == [(5,), (6,)]
    assert executes(db)[-1]["quals"][0][:3] == ("id", ("=", True), [5, 6])


def test_explain_shows_what_the_handler_says(src: Db) -> None:
    db = src
    plan = db.explain("SELECT * FROM ft WHERE id = 1")
    assert f"Source: {db.schema}.src" in plan
    plan = db.explain("SELECT * FROM mt WHERE id = 1")
    assert f"Handler: memory table {db.schema}.mt (dict)" in plan
    assert "Filter Hints: (id = 1)" in plan
    # EXPLAIN ANALYZE runs the scan
    plan = db.explain("SELECT * FROM ft WHERE id = 1", analyze=True)
    assert "rows=1 loops=1" in plan
