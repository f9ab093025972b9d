"""shoal.fdw.remote: foreign partitions on another shoal node, end to end on a real 2-node cluster.

A DBA-declared layout, as in the contract: `t` is hash-partitioned on n1, partition 0 is local and
partition 1 is a shoal_fdw foreign table on n2.  Ports 26300-26399 belong to this file.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from nodesql import running_cluster

from shoal.cluster import Cluster, Node
from shoal.pgbin import pg_bin

SCHEMA_N2 = """
CREATE TABLE t_p1 (id int PRIMARY KEY, name text, amount numeric(20,6), at timestamptz,
                   tags text[], doc jsonb);
CREATE VIEW slow AS SELECT t_p1.* FROM t_p1, pg_sleep(30);
"""

SCHEMA_N1 = """
CREATE TABLE t (id int, name text, amount numeric(20,6), at timestamptz, tags text[], doc jsonb)
    PARTITION BY HASH (id);
CREATE TABLE t_p0 PARTITION OF t FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE SERVER n2 FOREIGN DATA WRAPPER shoal_fdw OPTIONS (node 'n2');
CREATE FOREIGN TABLE t_p1 PARTITION OF t FOR VALUES WITH (MODULUS 2, REMAINDER 1)
    SERVER n2 OPTIONS (table_name 't_p1');
CREATE FOREIGN TABLE slow (id int, name text, amount numeric(20,6), at timestamptz, tags text[],
    doc jsonb) SERVER n2 OPTIONS (table_name 'slow');
-- the same rows in a plain local table, to compare answers with
CREATE TABLE expected (LIKE t);
"""

ROWS = [
    (i, f"name {i} é", Decimal(i) / 7 if i % 5 else None, f"2024-01-{1 + i % 28:02d} 10:00:00+02",
     ["a", f"b{i}"] if i % 3 else None, {"i": i, "even": i % 2 == 0})
    for i in range(1, 201)
]


@pytest.fixture(scope="module")
def nodes() -> Iterator[tuple[Node, Node]]:
    with running_cluster("shoal-r-", nodes=2, port=26301) as cluster:
        n1, n2 = cluster.nodes
        with psycopg.connect(n2.conninfo, autocommit=True) as conn:
            conn.execute(SCHEMA_N2)
        with psycopg.connect(n1.conninfo, autocommit=True) as conn:
            conn.execute(SCHEMA_N1)
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO t VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
                                [(*r[:5], psycopg.types.json.Jsonb(r[5])) for r in ROWS])
                cur.execute("INSERT INTO expected SELECT * FROM t")
        yield n1, n2


def rows(node: Node, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(node.conninfo, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def remote_count(n2: Node) -> int:
    return rows(n2, "SELECT count(*) FROM t_p1")[0][0]


def test_rows_are_split_between_the_nodes(nodes: tuple[Node, Node]) -> None:
    n1, n2 = nodes
    local = rows(n1, "SELECT count(*) FROM t_p0")[0][0]
    assert 0 < remote_count(n2) < len(ROWS)
    assert local + remote_count(n2) == len(ROWS)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM {t} ORDER BY id",
        "SELECT count(*), sum(amount), max(at), min(name) FROM {t}",
        "SELECT id, tags, doc FROM {t} WHERE id IN (3, 5, 8, 13) ORDER BY id",
        "SELECT id FROM {t} WHERE amount > 10 AND name LIKE 'name 1%%' ORDER BY id",
        "SELECT id, doc->>'even' FROM {t} WHERE doc @> '{{\"even\": true}}' ORDER BY id LIMIT 5",
        "SELECT id FROM {t} WHERE amount IS NULL ORDER BY id",
        "SELECT id, name FROM {t} ORDER BY name DESC LIMIT 7",
    ],
)
def test_answers_equal_a_local_table(nodes: tuple[Node, Node], query: str) -> None:
    n1, _ = nodes
    assert rows(n1, query.format(t="t")) == rows(n1, query.format(t="expected"))


def test_explain_shows_the_remote_sql(nodes: tuple[Node, Node]) -> None:
    n1, _ = nodes
    plan = "\n".join(r[0] for r in rows(n1, "EXPLAIN (VERBOSE) SELECT id, name FROM t WHERE id = 3"))
    assert 'Remote SQL: SELECT "id", "name" FROM "public"."t_p1" WHERE ((id = $1))' in plan
    assert "Pushed Constants: $1 = 3" in plan
    plan = "\n".join(r[0] for r in rows(n1, "EXPLAIN SELECT id FROM t ORDER BY id LIMIT 3"))
    assert 'ORDER BY "id" ASC NULLS LAST LIMIT 3' in plan


def test_row_estimates_follow_the_remote_statistics(nodes: tuple[Node, Node]) -> None:
    """A lookup by value finds rows / distinct values, as the remote node's ANALYZE counted them."""
    n1, n2 = nodes
    rows(n2, "ANALYZE t_p1")
    remote = remote_count(n2)
    days = rows(n2, "SELECT count(DISTINCT at) FROM t_p1")[0][0]

    def estimate(where: str) -> float:
        plan = rows(n1, f"EXPLAIN (FORMAT JSON) SELECT * FROM t_p1 WHERE {where}")[0][0][0]["Plan"]
        return plan["Plan Rows"]

    assert estimate("true") == remote
    assert estimate("id = 3") == 1
    assert estimate("at = '2024-01-03 10:00:00+02'") == round(remote / days) > 1
    assert estimate("id > 3") == round(remote * 0.33)


def make_half_remote(nodes: tuple[Node, Node], name: str, columns: str, remote_columns: str) -> None:
    """Table ``name`` (``columns``, key ``id``) hash-partitioned in two: ``{name}_p0`` on n1 with the
    primary key, ``{name}_p1`` n2's table of ``remote_columns`` as a foreign partition (PostgreSQL allows
    no unique index over a foreign partition: the key is each partition's)."""
    n1, n2 = nodes
    with psycopg.connect(n2.conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name}_p1 ({remote_columns})")
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} ({columns}) PARTITION BY HASH (id)")
        conn.execute(f"CREATE TABLE {name}_p0 PARTITION OF {name} (PRIMARY KEY (id)) "
                     "FOR VALUES WITH (MODULUS 2, REMAINDER 0)")
        conn.execute(f"CREATE FOREIGN TABLE {name}_p1 PARTITION OF {name} "
                     f"FOR VALUES WITH (MODULUS 2, REMAINDER 1) SERVER n2 OPTIONS (table_name '{name}_p1')")


def test_upsert_of_rows_of_the_remote_partition_matches_a_local_table(nodes: tuple[Node, Node]) -> None:
    """INSERT ... ON CONFLICT DO UPDATE through the parent: the clause runs on the remote node, what
    reads no row (parameters, now()) is computed here; RETURNING, counts and WHERE as on a plain table."""
    n1, _ = nodes
    make_half_remote(nodes, "u", "id int, name text, n int DEFAULT 0, at timestamptz",
                     "id int PRIMARY KEY, name text, n int DEFAULT 0, at timestamptz")
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE u_plain (id int PRIMARY KEY, name text, n int DEFAULT 0, at timestamptz)")
    statements = [
        "INSERT INTO {t} SELECT g, 'n' || g FROM generate_series(1, 12) g",
        "INSERT INTO {t} AS x VALUES (1, 'a'), (2, 'b'), (3, 'c'), (30, 'new') ON CONFLICT (id) DO UPDATE "
        "SET name = excluded.name || x.name, n = x.n + 1 RETURNING id, name, n",
        "INSERT INTO {t} VALUES (4, 'd'), (5, 'e') ON CONFLICT (id) DO UPDATE SET name = 'w' "
        "WHERE {t}.n > 0 RETURNING *",
        "INSERT INTO {t} VALUES (1, 'z'), (2, 'z') ON CONFLICT (id) DO UPDATE SET n = {t}.n * 10, "
        "name = {t}.id::text || excluded.name WHERE {t}.n > 0 RETURNING *",
        "INSERT INTO {t} VALUES (6, 'f') ON CONFLICT (id) DO UPDATE SET name = {t}.name RETURNING *",
        "INSERT INTO {t} SELECT id, 'again' FROM {t} WHERE id % 3 = 0 ON CONFLICT (id) DO UPDATE "
        "SET n = {t}.n + 100",
    ]
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        for statement in statements:
            cur = conn.execute(statement.format(t="u"))
            got = (cur.rowcount, sorted(cur.fetchall()) if cur.description else None)
            cur = conn.execute(statement.format(t="u_plain"))
            assert got == (cur.rowcount, sorted(cur.fetchall()) if cur.description else None), statement
        assert conn.execute("SELECT * FROM u ORDER BY id").fetchall() == \
            conn.execute("SELECT * FROM u_plain ORDER BY id").fetchall()
        assert conn.execute("SELECT count(*) FROM u_p1").fetchone()[0] > 3  # rows did go to n2

        # parameters and now() are this node's values, for both plans of a prepared statement
        conn.execute("PREPARE up(int, text) AS INSERT INTO u VALUES ($1, $2) ON CONFLICT (id) DO UPDATE "
                     "SET name = $2 || '!', at = now() WHERE u.n < 50 RETURNING id, name, at = now()")
        for mode in ("force_custom_plan", "force_generic_plan"):
            conn.execute(f"SET plan_cache_mode = {mode}")
            answers = [conn.execute(f"EXECUTE up({i}, 'p{i}')").fetchall() for i in range(1, 13)]
            assert all(a in ([(i, f"p{i}!", True)], []) for i, a in enumerate(answers, 1)), answers
            assert sum(1 for a in answers if a) >= 6
        remote_ids = [r[0] for r in conn.execute("SELECT id FROM u_p1 ORDER BY id")]
        conn.execute("RESET plan_cache_mode")

        with pytest.raises(psycopg.errors.FeatureNotSupported, match="cannot be evaluated on the node"):
            conn.execute("INSERT INTO u VALUES (%s, 'x') ON CONFLICT (id) DO UPDATE SET name = u.at::text",
                         (remote_ids[0],))
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="subquery"):
            conn.execute("INSERT INTO u VALUES (%s, 'x') ON CONFLICT (id) DO UPDATE "
                         "SET name = (SELECT p.name FROM u_plain p WHERE p.id = u.id)", (remote_ids[0],))
        before = conn.execute("SELECT * FROM u WHERE id = %s", (remote_ids[0],)).fetchall()
        # an uncorrelated subquery reads no row: computed here
        conn.execute("INSERT INTO u VALUES (%s, 'x') ON CONFLICT (id) DO UPDATE "
                     "SET name = (SELECT max(name) FROM u_plain)", (remote_ids[0],))
        after = conn.execute("SELECT * FROM u WHERE id = %s", (remote_ids[0],)).fetchall()
        assert after == [(*before[0][:1], conn.execute("SELECT max(name) FROM u_plain").fetchone()[0],
                          *before[0][2:])]


def test_upsert_that_would_update_a_remote_row_twice_fails_as_on_a_local_table(
        nodes: tuple[Node, Node]) -> None:
    """Rows of one INSERT ... ON CONFLICT DO UPDATE with the same key: PostgreSQL refuses to affect a
    row twice; a remote partition gets each row in its own statement, so shoal counts the keys."""
    n1, _ = nodes
    make_half_remote(nodes, "v", "id int, name text", "id int PRIMARY KEY, name text")
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE v_plain (id int PRIMARY KEY, name text)")
        for table in ("v", "v_plain"):
            conn.execute(f"INSERT INTO {table} SELECT g, 'x' FROM generate_series(1, 10) g")
        remote = conn.execute("SELECT id FROM v_p1 ORDER BY id LIMIT 1").fetchone()[0]
        hashed_there = "SELECT satisfies_hash_partition('v'::regclass, 2, 1, %s::int)"
        new = next(i for i in range(11, 40) if conn.execute(hashed_there, (i,)).fetchone()[0])
        twice = [
            f"INSERT INTO {{t}} VALUES ({remote}, 'a'), ({remote}, 'b') "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            f"INSERT INTO {{t}} VALUES ({new}, 'a'), ({new}, 'b') ON CONFLICT (id) DO UPDATE SET name = 'c'",
        ]
        for statement in twice:
            for table in ("v", "v_plain"):
                with pytest.raises(psycopg.errors.CardinalityViolation, match="a second time"):
                    conn.execute(statement.format(t=table))
        # a first row that left the row alone does not count
        once = (f"INSERT INTO {{t}} VALUES ({remote}, 'a'), ({remote}, 'b') "
                "ON CONFLICT (id) DO UPDATE SET name = excluded.name WHERE excluded.name = 'b' RETURNING *")
        got = conn.execute(once.format(t="v")).fetchall()
        assert got == conn.execute(once.format(t="v_plain")).fetchall() == [(remote, "b")]
        assert conn.execute("SELECT * FROM v ORDER BY id").fetchall() == \
            conn.execute("SELECT * FROM v_plain ORDER BY id").fetchall()


def test_upsert_into_a_remote_table_with_two_unique_constraints_checks_the_one_named(
        nodes: tuple[Node, Node]) -> None:
    """The remote statement names the constraint the statement named (the plan keeps its columns
    for the foreign partitions): a conflict on the other one fails, as in PostgreSQL."""
    n1, _ = nodes
    make_half_remote(nodes, "w", "id int, email text", "id int PRIMARY KEY, email text UNIQUE")
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        conn.execute("INSERT INTO w SELECT g, 'e' || g FROM generate_series(1, 10) g")
        remote, other = [r[0] for r in conn.execute("SELECT id FROM w_p1 ORDER BY id LIMIT 2").fetchall()]
        upsert = "INSERT INTO w VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET email = excluded.email"
        conn.execute(upsert, (remote, "x"))
        assert conn.execute("SELECT email FROM w WHERE id = %s", (remote,)).fetchone() == ("x",)
        with pytest.raises(psycopg.errors.UniqueViolation, match="email"):
            conn.execute(upsert, (remote, f"e{other}"))  # another row's email: not the key named
        assert conn.execute("SELECT email FROM w WHERE id = %s", (remote,)).fetchone() == ("x",)


def test_what_the_handler_cannot_do_reads_as_a_sql_error(nodes: tuple[Node, Node]) -> None:
    """Refusals are errors with a SQLSTATE and a hint, not a Python traceback."""
    n1, _ = nodes
    make_half_remote(nodes, "renamed", "id int, v int", "id int PRIMARY KEY, w int")
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        conn.execute("ALTER FOREIGN TABLE renamed_p1 ALTER COLUMN v OPTIONS (column_name 'w')")
        conn.execute("INSERT INTO renamed SELECT g, 0 FROM generate_series(1, 10) g")
        remote = conn.execute("SELECT min(id) FROM renamed_p1").fetchone()[0]
        upsert = "INSERT INTO renamed VALUES (%s, 1) ON CONFLICT (id) DO UPDATE SET v = 2"
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="other names") as refused:
            conn.execute(upsert, (remote,))
        assert refused.value.diag.message_detail is None
        conn.execute("CREATE SERVER nowhere FOREIGN DATA WRAPPER shoal_fdw")
        try:
            conn.execute("CREATE FOREIGN TABLE nowhere_t (id int) SERVER nowhere")
            with pytest.raises(psycopg.errors.FdwError, match="names no node") as refused:
                conn.execute("SELECT * FROM nowhere_t")
            assert refused.value.diag.message_detail is None
            assert "OPTIONS (node" in refused.value.diag.message_hint
        finally:
            conn.execute("DROP SERVER nowhere CASCADE")


def test_analyze_samples_the_remote_partition(nodes: tuple[Node, Node]) -> None:
    """With the option analyze, ANALYZE of the parent takes rows of the foreign partition too, each
    equally likely, even where the remote catalog's row count is far off (the sample is a
    reservoir of what comes)."""
    n1, n2 = nodes
    make_half_remote(nodes, "an", "id int, tag text", "id int PRIMARY KEY, tag text")
    with psycopg.connect(n2.conninfo, autocommit=True) as conn:
        conn.execute("ALTER TABLE an_p1 SET (autovacuum_enabled = off)")
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        rows = ("INSERT INTO an SELECT g, CASE WHEN satisfies_hash_partition('an'::regclass, 2, 0, g) "
                "THEN 'here' ELSE %s END FROM generate_series(%s::int, %s::int) g")
        conn.execute(rows, ("early", 1, 20000))
        with psycopg.connect(n2.conninfo, autocommit=True) as remote:
            remote.execute("ANALYZE an_p1")  # its catalog says a third of what it will hold
        conn.execute(rows, ("late", 20001, 60000))  # all after the early ones there
        notices: list[str] = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute("ANALYZE an")  # by default, as PostgreSQL does without AnalyzeForeignTable
        assert any("cannot analyze this foreign table" in n for n in notices), notices
        assert conn.execute("SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'an' "
                            "AND attname = 'tag' AND inherited").fetchall() == [("{here}",)]
        conn.execute("ALTER FOREIGN TABLE an_p1 OPTIONS (ADD analyze 'true')")
        notices.clear()
        conn.execute("ANALYZE an")
        assert notices == []
        stats = dict(conn.execute(
            "SELECT unnest(most_common_vals::text::text[]), unnest(most_common_freqs) FROM pg_stats "
            "WHERE tablename = 'an' AND attname = 'tag' AND inherited").fetchall())
        counts = dict(conn.execute("SELECT tag, count(*) FROM an GROUP BY tag").fetchall())
        remote_rows = counts["early"] + counts["late"]
        for tag in ("here", "early", "late"):  # "late": not only the first rows of the sample
            assert stats[tag] == pytest.approx(counts[tag] / 60000, abs=0.03), tag
        reltuples = conn.execute("SELECT reltuples FROM pg_class WHERE relname = 'an_p1'").fetchone()[0]
        assert reltuples == pytest.approx(remote_rows, rel=0.05)


def test_constants_travel_as_parameters(nodes: tuple[Node, Node]) -> None:
    """The SQL sent is the same whatever the constants: the remote workers plan it once."""
    n1, _ = nodes
    sent, remote = set(), 0
    for value in range(1, 11):
        plan = [r[0] for r in rows(n1, f"EXPLAIN SELECT id, name FROM t WHERE id = {value} AND name <> 'x'")]
        if any("Remote SQL: " in line for line in plan):  # the rows of the other node's partition
            remote += 1
            sent.update(line.split("Remote SQL: ")[1] for line in plan if "Remote SQL: " in line)
            assert any(f"Pushed Constants: $1 = 'x'::text, $2 = {value}" in line for line in plan), plan
    assert remote >= 2 and len(sent) == 1, sent


@pytest.mark.parametrize("plan_mode", ["force_custom_plan", "force_generic_plan"])
def test_values_keep_their_meaning_whatever_the_session_styles(
    nodes: tuple[Node, Node], plan_mode: str
) -> None:
    """Constants, parameters and written values travel in a text form the other node reads back
    the same, although this session prints dates day first and floats with fewer digits."""
    n1, _ = nodes
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        conn.execute(f"SET plan_cache_mode = {plan_mode}")
        conn.execute("SET datestyle = 'SQL, DMY'; SET intervalstyle = 'sql_standard'; "
                     "SET extra_float_digits = -3")
        conn.execute("PREPARE styles(timestamptz) AS SELECT id FROM t WHERE at = $1 ORDER BY id")
        expected = conn.execute("SELECT id FROM expected WHERE at = '2024-01-03 10:00:00+02' ORDER BY id")
        expected = expected.fetchall()
        assert len(expected) > 2
        assert conn.execute("EXECUTE styles('2024-01-03 10:00:00+02')").fetchall() == expected
        assert conn.execute("SELECT id FROM t WHERE at = '03/01/2024 10:00:00+02' ORDER BY id").fetchall() \
            == expected
        assert conn.execute("SELECT id FROM t WHERE at + interval '1 mon 2 days' = '2024-02-05 10:00+02' "
                            "ORDER BY id").fetchall() == expected
        conn.execute("BEGIN")
        conn.execute("UPDATE t SET at = at + interval '1 year 1 mon' WHERE id = ANY(%s)",
                     ([r[0] for r in expected],))
        moved = conn.execute("SELECT id FROM t WHERE at = '2025-02-03 10:00:00+02' ORDER BY id").fetchall()
        conn.execute("ROLLBACK")
        assert moved == expected


def test_generic_plan_pushes_the_parameter(nodes: tuple[Node, Node]) -> None:
    n1, _ = nodes
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("PREPARE q(int) AS SELECT id, name FROM t WHERE id = $1")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN EXECUTE q(3)"))
        assert "WHERE ((id = $1))" in plan and "Subplans Removed: 1" in plan
        for i in (1, 3, 7, 9):
            assert conn.execute(f"EXECUTE q({i})").fetchall() == [(i, f"name {i} é")]


def explain(conn: psycopg.Connection, sql: str, params: tuple = ()) -> str:
    return "\n".join(r[0] for r in conn.execute(f"EXPLAIN (VERBOSE, COSTS OFF) {sql}", params or None))


def test_update_and_delete_run_whole_on_the_remote_node(nodes: tuple[Node, Node]) -> None:
    """One statement, one round trip: no scan FOR UPDATE and no UPDATE by ctid per row."""
    n1, _ = nodes
    with psycopg.connect(n1.conninfo) as conn:
        plan = explain(conn, "UPDATE t SET amount = amount + 1 WHERE id = 3")
        assert "Foreign Update on public.t_p1" in plan
        assert 'Remote SQL: UPDATE "public"."t_p1" SET "amount" = (amount + $2) WHERE ((id = $1))' in plan
        assert "Pushed Constants: $1 = 3, $2 = '1'::numeric" in plan and "FOR UPDATE" not in plan
        plan = explain(conn, "DELETE FROM t WHERE name LIKE 'name 1%' RETURNING id")
        assert 'Remote SQL: DELETE FROM "public"."t_p1" WHERE ((name ~~ $1)) RETURNING "id", "name"' in plan

        # the same statements on a plain table give the same counts, rows and final state
        for statement, params in [
            ("UPDATE {} SET amount = amount * 2, name = upper(name) WHERE id BETWEEN %s AND %s", (5, 40)),
            ("UPDATE {} SET tags = tags || 'c'::text WHERE tags IS NOT NULL AND id > %s", (150,)),
            ("DELETE FROM {} WHERE id %% 7 = %s", (3,)),
            ("UPDATE {} SET doc = doc || '{{\"x\": 1}}' WHERE (doc->>'i')::int < %s", (30,)),
        ]:
            got = conn.execute(statement.format("t"), params).rowcount
            assert got == conn.execute(statement.format("expected"), params).rowcount > 0
        for statement in ["UPDATE {} SET amount = 0 WHERE id < 60 RETURNING id, name, amount, tableoid > 0",
                          "DELETE FROM {} WHERE id > 180 RETURNING *"]:
            got = conn.execute(statement.format("t")).fetchall()
            assert sorted(got) == sorted(conn.execute(statement.format("expected")).fetchall())
            assert len(got) > 10
        assert conn.execute("SELECT * FROM t ORDER BY id").fetchall() == \
            conn.execute("SELECT * FROM expected ORDER BY id").fetchall()
        conn.rollback()


def test_prepared_update_runs_whole_with_its_parameters(nodes: tuple[Node, Node]) -> None:
    n1, _ = nodes
    with psycopg.connect(n1.conninfo) as conn:
        for mode in ("force_custom_plan", "force_generic_plan"):
            conn.execute(f"SET plan_cache_mode = {mode}")
            conn.execute("PREPARE bump(int, numeric) AS UPDATE t SET amount = coalesce(amount, 0) + $2 "
                         "WHERE id = $1")
            assert "Foreign Update on public.t_p1" in explain(conn, "EXECUTE bump(3, 1)")
            for i in range(1, 9):
                assert conn.execute(f"EXECUTE bump({i}, 2.5)").rowcount == 1
                conn.execute("UPDATE expected SET amount = coalesce(amount, 0) + 2.5 WHERE id = %s", (i,))
            conn.execute("DEALLOCATE bump")
        assert conn.execute("SELECT id, amount FROM t WHERE id < 9 ORDER BY id").fetchall() == \
            conn.execute("SELECT id, amount FROM expected WHERE id < 9 ORDER BY id").fetchall()
        conn.rollback()


def test_generic_plans_of_pl_pgsql_writes_lock_only_their_rows(nodes: tuple[Node, Node]) -> None:
    """In a generic plan, a PL/pgSQL variable's array element (ids[i]) is an expression of
    parameters: it is computed here and shipped, so that the remote scan of the row path reads
    (and locks FOR UPDATE) the one row, not the whole partition, and a plain UPDATE runs whole."""
    n1, n2 = nodes
    remote_ids = [r[0] for r in rows(n2, "SELECT id FROM t_p1 ORDER BY id LIMIT 2")]
    with psycopg.connect(n1.conninfo) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("PREPARE bump(int[], int) AS UPDATE t SET amount = "
                     "CASE WHEN amount IS NULL THEN $1[$2] ELSE amount + $1[$2] END WHERE id = $1[$2]")
        plan = explain(conn, f"EXECUTE bump('{{{remote_ids[0]}}}', 1)")
        assert "Foreign Update on public.t_p1" in plan and "WHERE ((id = $1))" in plan, plan
        conn.execute("""CREATE FUNCTION pg_temp.rename(ids int[]) RETURNS void LANGUAGE plpgsql AS $$
            BEGIN
                FOR i IN 1 .. array_length(ids, 1) LOOP
                    -- volatile: this UPDATE goes row by row, after a scan FOR UPDATE
                    UPDATE t SET name = name || left(random()::text, 0) WHERE id = ids[i];
                    UPDATE t SET amount = CASE WHEN amount IS NULL THEN 1 ELSE amount + ids[i] END
                     WHERE id = ids[i];
                END LOOP;
            END $$""")
        conn.execute("SELECT pg_temp.rename(%s)", ([remote_ids[0]],))
        conn.execute(f"EXECUTE bump('{{{remote_ids[0]}}}', 1)")
        # the transaction holds one remote row: the next one is free on its node
        with psycopg.connect(n2.conninfo, autocommit=True) as other:
            other.execute("SET lock_timeout = '3s'")
            assert other.execute("UPDATE t_p1 SET name = name WHERE id = %s", (remote_ids[1],)).rowcount == 1
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("UPDATE t_p1 SET name = name WHERE id = %s", (remote_ids[0],))
        conn.rollback()


def test_error_of_a_whole_update_keeps_its_sqlstate_and_the_transaction_recovers(
    nodes: tuple[Node, Node]
) -> None:
    n1, _ = nodes
    with psycopg.connect(n1.conninfo) as conn:
        before = conn.execute("SELECT amount FROM t WHERE id = 3").fetchone()
        conn.execute("SAVEPOINT s")
        assert "Foreign Update" in explain(conn, "UPDATE t SET amount = amount / 0 WHERE id = 3")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("UPDATE t SET amount = amount / 0 WHERE id = 3")
        conn.execute("ROLLBACK TO SAVEPOINT s")
        assert conn.execute("UPDATE t SET amount = 1 WHERE id = 3").rowcount == 1
        conn.rollback()
        assert conn.execute("SELECT amount FROM t WHERE id = 3").fetchone() == before


@pytest.mark.parametrize("statement", [
    "UPDATE t SET name = name || random()::text WHERE id = 3",  # volatile: computed here, per row
    "UPDATE t SET name = 'x' WHERE id = 3 AND random() < 2",  # a qual that stays here
    "UPDATE t SET id = id + 1000 WHERE id = 3",  # the row may move to another partition
    "UPDATE t_p1 SET id = id + 1000 WHERE id = 3",  # so it may when the partition is the target
])
def test_update_that_cannot_run_whole_goes_row_by_row(nodes: tuple[Node, Node], statement: str) -> None:
    n1, _ = nodes
    with psycopg.connect(n1.conninfo) as conn:
        plan = explain(conn, statement)
        assert "FOR UPDATE" in plan and "Remote SQL: UPDATE" not in plan
        assert conn.execute(statement).rowcount == 1
        conn.rollback()


def test_insert_commit_and_rollback_reach_the_remote_node(nodes: tuple[Node, Node]) -> None:
    n1, n2 = nodes
    before = remote_count(n2)
    with psycopg.connect(n1.conninfo) as conn:
        conn.execute("INSERT INTO t (id, name) SELECT i, 'rolled back' FROM generate_series(1001, 1100) i")
        conn.rollback()
    assert remote_count(n2) == before
    with psycopg.connect(n1.conninfo) as conn:
        got = conn.execute("INSERT INTO t (id, name) VALUES (1001, 'kept') RETURNING id, name").fetchall()
        conn.execute("INSERT INTO t (id, name) SELECT i, 'kept' FROM generate_series(1002, 1100) i")
        assert got == [(1001, "kept")]
    assert rows(n1, "SELECT count(*) FROM t WHERE name = 'kept'") == [(100,)]
    assert remote_count(n2) > before
    rows(n1, "DELETE FROM t_p0 WHERE name = 'kept'")
    rows(n2, "DELETE FROM t_p1 WHERE name = 'kept'")


def test_savepoint_rollback_undoes_remote_work(nodes: tuple[Node, Node]) -> None:
    n1, n2 = nodes
    with psycopg.connect(n1.conninfo) as conn:
        conn.execute("INSERT INTO t_p1 (id, name) VALUES (2001, 'outer')")
        with contextlib.suppress(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute("INSERT INTO t_p1 (id, name) VALUES (2003, 'inner')")
            conn.execute("INSERT INTO t_p1 (id, name) VALUES (2003, 'duplicate')")
        conn.execute("INSERT INTO t_p1 (id, name) VALUES (2005, 'after')")
    assert rows(n2, "SELECT id FROM t_p1 WHERE id > 2000 ORDER BY id") == [(2001,), (2005,)]
    rows(n2, "DELETE FROM t_p1 WHERE id > 2000")


def test_remote_error_keeps_its_sqlstate(nodes: tuple[Node, Node]) -> None:
    n1, n2 = nodes
    taken = rows(n2, "SELECT min(id) FROM t_p1")[0][0]
    with pytest.raises(psycopg.errors.UniqueViolation, match="duplicate key"):
        rows(n1, "INSERT INTO t_p1 (id, name) VALUES (%s, 'again')", (taken,))


def test_copy_routes_rows_to_the_remote_partition(nodes: tuple[Node, Node]) -> None:
    n1, n2 = nodes
    before = remote_count(n2)
    with psycopg.connect(n1.conninfo) as conn, conn.cursor() as cur:
        with cur.copy("COPY t (id, name) FROM STDIN") as copy:
            for i in range(3001, 4001):
                copy.write_row((i, "copied"))
    assert rows(n1, "SELECT count(*) FROM t WHERE name = 'copied'") == [(1000,)]
    assert remote_count(n2) > before
    rows(n1, "DELETE FROM t_p0 WHERE name = 'copied'")
    rows(n2, "DELETE FROM t_p1 WHERE name = 'copied'")


def test_cancel_of_a_remote_scan(nodes: tuple[Node, Node]) -> None:
    n1, _ = nodes
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        pid = conn.info.backend_pid
        timer = threading.Timer(1.0, lambda: rows(n1, "SELECT pg_cancel_backend(%s)", (pid,)))
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT count(*) FROM slow")
        assert time.monotonic() - started < 10
        timer.join()
        # the same session goes on, with a fresh connection to n2
        assert conn.execute("SELECT count(*) FROM t WHERE id < 50").fetchone() == (49,)


def test_statement_timeout_of_a_remote_scan(nodes: tuple[Node, Node]) -> None:
    n1, _ = nodes
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '1s'")
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            conn.execute("SELECT count(*) FROM slow")
        conn.execute("RESET statement_timeout")
        assert conn.execute("SELECT count(*) FROM t WHERE id < 50").fetchone() == (49,)


def test_unknown_node_is_a_clear_error(nodes: tuple[Node, Node]) -> None:
    n1, _ = nodes
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        conn.execute("CREATE SERVER IF NOT EXISTS nowhere FOREIGN DATA WRAPPER shoal_fdw OPTIONS (node 'n9')")
        conn.execute("CREATE FOREIGN TABLE IF NOT EXISTS lost (id int) SERVER nowhere")
        with pytest.raises(psycopg.errors.UndefinedObject, match='node "n9" is not in shoal.nodes'):
            conn.execute("SELECT * FROM lost")
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_node_down_then_back(nodes: tuple[Node, Node]) -> None:
    n1, n2 = nodes
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM t_p1").fetchone()[0] > 0
        data_dir = rows(n2, "SHOW data_directory")[0][0]
        cluster = Cluster(Path(data_dir).parent.parent)  # DIR/n2/data
        subprocess.run([str(pg_bin() / "pg_ctl"), "stop", "-D", data_dir, "-m", "immediate", "-w"],
                       check=True, capture_output=True)
        try:
            with pytest.raises(psycopg.OperationalError, match='node "n2"'):
                conn.execute("SELECT count(*) FROM t_p1")
            assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            cluster.up(nodes=2, port=26301)
        assert conn.execute("SELECT count(*) FROM t_p1").fetchone()[0] > 0
