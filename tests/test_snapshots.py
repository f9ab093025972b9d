"""One cut across nodes (shoal.transactions.snapshots), made deterministic on a 3-node cluster.

A distributed transaction is held between its decision and its second phase (``shoal.crash_point =
stall_after_local_commit``): its coordinator has committed, its participants have not yet.  A reader
of every node must then see none of it or all of it; with ``shoal.consistent_snapshots = off`` the
half-committed state shows, which proves the test can fail.  Ports 27000-27099 belong to this file.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from nodesql import end_workers_in_blocks, local_ids, running_cluster, sql

from shoal.cluster import Node

TOTAL = 60 * 100


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[Node]]:
    with running_cluster("shoal-s-", nodes=3, port=27001) as cluster:
        sql(cluster.nodes[0], "CREATE TABLE acct (id int PRIMARY KEY, balance int NOT NULL) "
                              "WITH (distributed_by = 'id', num_parts = 6)")
        yield cluster.nodes


@pytest.fixture(autouse=True)
def fresh_accounts(nodes: list[Node]) -> None:
    sql(nodes[0], "TRUNCATE acct")
    sql(nodes[0], "INSERT INTO acct SELECT g, 100 FROM generate_series(1, 60) g")


@contextlib.contextmanager
def half_committed(nodes: list[Node]) -> Iterator[None]:
    """A transfer from n1 that takes 100 from an account of each node and gives 300 to one of
    n1's, stalled after its decision, before its participants commit."""
    n1, n2, n3 = nodes
    taken = [local_ids(n)[0] for n in nodes]
    given = local_ids(n1)[1]
    ids = ", ".join(map(str, taken))
    statement = (f"BEGIN; UPDATE acct SET balance = balance - 100 WHERE id IN ({ids}); "
                 f"UPDATE acct SET balance = balance + 300 WHERE id = {given}; COMMIT")
    decided_before = sql(n1, "SELECT count(*) FROM shoal.decided")[0][0]
    thread = threading.Thread(target=sql, args=(n1, statement),
                              kwargs={"shoal__crash_point": "stall_after_local_commit"})
    thread.start()
    deadline = time.monotonic() + 10
    while sql(n1, "SELECT count(*) FROM shoal.decided")[0][0] == decided_before:
        assert time.monotonic() < deadline, "the transfer did not reach its decision"
        time.sleep(0.05)
    try:
        yield
    finally:
        thread.join(30)


def test_without_cuts_a_reader_sees_half_a_transaction(nodes: list[Node]) -> None:
    n1, n2, _ = nodes
    with half_committed(nodes):
        seen = sql(n2, "SELECT sum(balance) FROM acct", shoal__consistent_snapshots="off")[0][0]
    assert seen != TOTAL  # n1's half is committed, the participants' is not yet
    assert sql(n2, "SELECT sum(balance) FROM acct")[0][0] == TOTAL


def test_a_statement_reading_several_nodes_sees_all_or_nothing(nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    with half_committed(nodes):
        started = time.monotonic()
        seen = sql(n2, "SELECT sum(balance) FROM acct")[0][0]
        waited = time.monotonic() - started
        before = sql(n3, "SELECT count(*) FROM acct WHERE balance = 0")[0][0]
    assert seen == TOTAL
    # it waited for the second phase, and then saw the whole transfer
    assert waited > 0.5 and before == 3


def test_a_transaction_that_wrote_on_other_nodes_reads_them_in_one_cut(nodes: list[Node]) -> None:
    """Its reads of n1 and n3 go to its own blocks there (they see its writes), and in READ
    COMMITTED each would take a snapshot of its own: the block holds one taken in the cut."""
    n1, n2, n3 = nodes
    mine = [local_ids(n1)[2], local_ids(n3)[2]]
    with psycopg.connect(n2.conninfo) as writer:
        writer.execute("UPDATE acct SET balance = balance + 1 WHERE id = ANY(%s)", (mine,))
        with half_committed(nodes):
            seen = writer.execute("SELECT sum(balance) FROM acct").fetchone()[0]
        assert seen == TOTAL + 2
        writer.execute("UPDATE acct SET balance = balance + 1 WHERE id = ANY(%s)", (mine,))
        # the blocks go on after the cut, with fresh snapshots for statements that take none
        assert writer.execute("SELECT balance FROM acct WHERE id = %s", (mine[0],)).fetchone()[0] == 102
        assert writer.execute("SELECT sum(balance) FROM acct").fetchone()[0] == TOTAL + 4
        writer.commit()
    assert sql(n1, "SELECT sum(balance) FROM acct")[0][0] == TOTAL + 4


def test_a_statement_in_a_function_sees_all_or_nothing(nodes: list[Node]) -> None:
    """In READ COMMITTED each statement of a VOLATILE function has a snapshot of its own: one
    that reads several nodes takes a cut, as a client's statement does."""
    n1, n2, _ = nodes
    sql(n2, "CREATE OR REPLACE FUNCTION acct_total() RETURNS bigint LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN (SELECT sum(balance) FROM acct); END $$")
    with half_committed(nodes):
        assert sql(n2, "SELECT acct_total()")[0][0] == TOTAL
        assert sql(n2, "DO $$ BEGIN IF (SELECT sum(balance) FROM acct) <> 6000 THEN "
                       "RAISE 'half a transfer'; END IF; END $$") == []
    assert sql(n2, "SELECT acct_total()", shoal__consistent_snapshots="off")[0][0] == TOTAL


def test_a_stable_function_reads_in_its_callers_cut(nodes: list[Node]) -> None:
    """A STABLE function's statements run on the snapshot of the statement that calls it: a
    statement calling one takes a cut of every node, and they read in it."""
    n1, n2, _ = nodes
    sql(n2, "CREATE OR REPLACE FUNCTION acct_sum() RETURNS bigint STABLE LANGUAGE sql AS "
            "$$ SELECT sum(balance) FROM acct $$")
    sql(n2, "CREATE OR REPLACE FUNCTION acct_sum_pl(lo int) RETURNS bigint STABLE LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN (SELECT sum(balance) FROM acct WHERE id >= lo); END $$")
    one = local_ids(n2)[0]
    with half_committed(nodes):
        assert sql(n2, "SELECT acct_sum(), acct_sum_pl(0)") == [(TOTAL, TOTAL)]
        # the caller reads one node only, but its functions read them all
        seen = sql(n2, "SELECT acct_sum_pl(0) - balance FROM acct WHERE id = %s", (one,))[0][0]
        assert seen in (TOTAL - 100, TOTAL)  # the transfer took 100 from that row: none or all of it
    assert sql(n2, "SELECT acct_sum()", shoal__consistent_snapshots="off") == [(TOTAL,)]


@pytest.mark.parametrize("level", ["read committed", "repeatable read"])
def test_a_function_that_partition_pruning_calls_reads_in_the_cut(nodes: list[Node], level: str) -> None:
    """Initial pruning calls the function while the statement's executor starts, before the
    statement knows what it reads: the statement takes its cut, of every node, right then."""
    n1 = nodes[0]
    sql(n1, "CREATE OR REPLACE FUNCTION acct_hundreds() RETURNS int STABLE LANGUAGE sql AS "
            "$$ SELECT (sum(balance) / 100)::int FROM acct $$")
    query = "SELECT id, balance FROM acct WHERE id = acct_hundreds()"
    assert sql(n1, query) == [(60, 100)]
    with psycopg.connect(n1.conninfo) as reader:
        reader.execute(f"SET TRANSACTION ISOLATION LEVEL {level.upper()}")
        with half_committed(nodes):
            # 6,200 (id 62: no row) or 5,900 (id 59) if the function read half of the transfer
            assert reader.execute(query).fetchall() == [(60, 100)]
            assert reader.execute("SELECT sum(balance) FROM acct").fetchone()[0] == TOTAL
        reader.commit()
    sql(n1, "UPDATE acct SET balance = 7 WHERE id = acct_hundreds() - 1")
    assert sql(n1, "SELECT sum(balance) FROM acct")[0][0] == TOTAL - 93


def test_a_later_repeatable_read_statement_keeps_its_cut_through_pruning(nodes: list[Node]) -> None:
    """Only a transaction's first statement takes its cut: a function that a later one's pruning
    calls reads in the transaction's cut, which stays where it was."""
    n1, n2, _ = nodes
    sql(n1, "CREATE OR REPLACE FUNCTION acct_hundreds() RETURNS int STABLE LANGUAGE sql AS "
            "$$ SELECT (sum(balance) / 100)::int FROM acct $$")
    with psycopg.connect(n1.conninfo) as reader:
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        assert reader.execute("SELECT sum(balance) FROM acct").fetchone()[0] == TOTAL
        sql(n1, "UPDATE acct SET balance = balance + 200 WHERE id = %s", (local_ids(n2)[0],))
        assert reader.execute("SELECT id FROM acct WHERE id = acct_hundreds()").fetchall() == [(60,)]
        assert reader.execute("SELECT sum(balance) FROM acct").fetchone()[0] == TOTAL


def test_pruning_functions_in_a_database_without_shoal(nodes: list[Node]) -> None:
    """The library is loaded in every database of the cluster; where the extension is not
    installed, a statement pruned by a function that reads is PostgreSQL's alone."""
    n1 = nodes[0]
    if not sql(n1, "SELECT 1 FROM pg_database WHERE datname = 'without_shoal'"):
        sql(n1, "CREATE DATABASE without_shoal")
    with psycopg.connect(f"{n1.conninfo} dbname=without_shoal", autocommit=True) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "without_shoal"
        conn.execute("DROP TABLE IF EXISTS parts")
        conn.execute("CREATE TABLE parts (k int) PARTITION BY HASH (k)")
        for i in range(2):
            conn.execute(f"CREATE TABLE parts_{i} PARTITION OF parts "
                         f"FOR VALUES WITH (MODULUS 2, REMAINDER {i})")
        conn.execute("INSERT INTO parts SELECT generate_series(1, 10)")
        conn.execute("CREATE OR REPLACE FUNCTION parts_count() RETURNS int STABLE LANGUAGE sql AS "
                     "$$ SELECT count(*)::int FROM parts $$")
        assert conn.execute("SELECT k FROM parts WHERE k = parts_count()").fetchall() == [(10,)]


@pytest.mark.parametrize("scan", ["enable_bitmapscan", "enable_indexscan"])
def test_a_function_in_an_index_condition_reads_in_the_cut(nodes: list[Node], scan: str) -> None:
    """The statement reads one table of this node only, through an index whose condition calls
    a function that reads every node: the statement takes a cut of every node."""
    n1 = nodes[0]
    sql(n1, "CREATE OR REPLACE FUNCTION acct_hundreds() RETURNS int STABLE LANGUAGE sql AS "
            "$$ SELECT (sum(balance) / 100)::int FROM acct $$")
    sql(n1, "CREATE TABLE IF NOT EXISTS plain_keys (k int PRIMARY KEY)")
    sql(n1, "INSERT INTO plain_keys SELECT g FROM generate_series(1, 100) g ON CONFLICT DO NOTHING")
    query = "SELECT k FROM plain_keys WHERE k = acct_hundreds()"
    settings = {"enable_seqscan": "off", scan: "off"}  # the other index scan, then
    plan = "\n".join(row[0] for row in sql(n1, f"EXPLAIN {query}", **settings))
    assert "Index" in plan
    with half_committed(nodes):
        assert sql(n1, query, **settings) == [(60,)]


def test_a_single_node_read_takes_no_cut(nodes: list[Node]) -> None:
    n1, n2, _ = nodes
    one, mine = local_ids(n2)[0], local_ids(n1)[2]
    with half_committed(nodes):
        started = time.monotonic()
        sql(n1, "SELECT balance FROM acct WHERE id = %s", (one,))  # one remote node only
        # a write reads one remote node: the row it changes here is no read
        sql(n1, "UPDATE acct SET balance = balance + (SELECT balance FROM acct WHERE id = %s) - 100 "
                "WHERE id = %s", (one, mine))
        assert time.monotonic() - started < 1.0


def test_two_reads_of_one_other_node_take_a_cut(nodes: list[Node]) -> None:
    n1, n2, _ = nodes
    # a row of each of n2's partitions: the statement scans both, on n2 only
    first, second = [r[0] for r in sql(n2, "SELECT min(t.id) FROM acct t JOIN shoal.partitions p "
                                           "ON p.partition_name::regclass = t.tableoid "
                                           "WHERE p.is_local GROUP BY t.tableoid")]
    with half_committed(nodes):
        started = time.monotonic()
        sql(n1, "SELECT sum(balance) FROM acct WHERE id IN (%s, %s)", (first, second))
        assert time.monotonic() - started > 0.5  # it waited for n2's gate: a cut


def test_repeatable_read_keeps_one_cut_on_every_node(nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    on_n3 = local_ids(n3)[0]
    with psycopg.connect(n2.conninfo) as reader:
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        # the first statement reads only n2, yet fixes the cut on every node
        reader.execute("SELECT count(*) FROM acct WHERE id = %s", (local_ids(n2)[0],))
        sql(n1, "UPDATE acct SET balance = 0 WHERE id = %s", (on_n3,))
        sql(n1, "INSERT INTO acct VALUES (1000, 5)")
        # n3 was never read before: it still shows the cut
        assert reader.execute("SELECT balance FROM acct WHERE id = %s", (on_n3,)).fetchone()[0] == 100
        assert reader.execute("SELECT sum(balance), count(*) FROM acct").fetchone() == (TOTAL, 60)
        reader.commit()
        assert reader.execute("SELECT sum(balance) FROM acct").fetchone()[0] == TOTAL - 100 + 5


@pytest.mark.parametrize(("first", "row_on"), [("SELECT now()", None),
                                               ("DO $$ BEGIN PERFORM 1; END $$", None),
                                               ("UPDATE acct SET balance = balance WHERE id = %s", 0),
                                               ("UPDATE acct SET balance = balance WHERE id = %s", 2),
                                               ("COPY (SELECT 1) TO STDOUT", None),
                                               ("CREATE TEMP TABLE first_ctas AS SELECT 1 AS x", None),
                                               ("EXPLAIN ANALYZE SELECT 1", None),
                                               ("EXECUTE first_prepared", None),
                                               ("DECLARE first_cursor CURSOR FOR SELECT 1", None),
                                               ("CREATE TEMP TABLE first_ddl (x int)", None)])
def test_repeatable_read_is_a_cut_whatever_its_first_statement(nodes: list[Node], first: str,
                                                               row_on: int | None) -> None:
    """The first statement fixes the transaction's snapshot here, whether it reads a shoal table,
    none, or writes (here or on another node), or is a utility statement: later reads of other
    nodes see the same instant."""
    n1, n2, _ = nodes
    on_n2 = local_ids(n2)[0]
    with psycopg.connect(n1.conninfo, autocommit=True) as reader:
        reader.execute("PREPARE first_prepared AS SELECT 1")
        reader.autocommit = False
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if first.startswith("COPY"):
            with reader.cursor().copy(first) as copy:
                assert list(copy)
        else:
            reader.execute(first, (local_ids(nodes[row_on])[0],) if row_on is not None else ())
        sql(n1, "UPDATE acct SET balance = 0 WHERE id = %s", (on_n2,))
        assert reader.execute("SELECT balance FROM acct WHERE id = %s", (on_n2,)).fetchone()[0] == 100
        assert reader.execute("SELECT sum(balance) FROM acct").fetchone()[0] == TOTAL


@pytest.mark.parametrize("statement", ["COPY (SELECT id, balance FROM acct) TO STDOUT",
                                       "CREATE TEMP TABLE acct_copy AS SELECT * FROM acct",
                                       "EXPLAIN ANALYZE SELECT * FROM acct"])
@pytest.mark.parametrize("level", ["read committed", "repeatable read"])
def test_utility_statements_read_in_one_cut(nodes: list[Node], statement: str, level: str) -> None:
    """COPY, CREATE TABLE AS and EXPLAIN ANALYZE run a query over every node: in one cut, alone
    or first in a REPEATABLE READ transaction."""
    n1 = nodes[0]
    with psycopg.connect(n1.conninfo, autocommit=True) as reader:
        reader.execute(f"SET default_transaction_isolation = '{level}'")
        reader.execute("DROP TABLE IF EXISTS acct_copy")
        with half_committed(nodes):
            started = time.monotonic()
            if statement.startswith("COPY"):
                with reader.cursor().copy(statement) as copy:
                    lines = bytes(b"".join(copy)).splitlines()
                total = sum(int(line.split(b"\t")[1]) for line in lines)
            else:
                cursor = reader.execute(statement)
                if statement.startswith("EXPLAIN"):
                    assert "actual" in cursor.fetchone()[0]
                    total = TOTAL  # what it read does not show; that it waited does
                else:
                    total = reader.execute("SELECT sum(balance) FROM acct_copy").fetchone()[0]
            waited = time.monotonic() - started
    # the cut waited for the transfer's second phase, then saw all of it
    assert total == TOTAL and waited > 0.5


@pytest.mark.parametrize("statement", [
    "INSERT INTO totals SELECT sum(balance) FROM acct",
    "INSERT INTO acct SELECT 1000 + id, balance FROM acct",
    "UPDATE acct SET balance = balance + (SELECT sum(balance) FROM acct) - %(total)s WHERE id = %(on_n2)s",
    "WITH moved AS (UPDATE acct SET balance = balance WHERE id = %(on_n2)s RETURNING balance) "
    "INSERT INTO totals SELECT sum(balance) FROM acct",
    "INSERT INTO totals SELECT acct_total()",
    "MERGE INTO totals USING (SELECT sum(balance) AS s FROM acct) src ON false "
    "WHEN NOT MATCHED THEN INSERT VALUES (src.s)"])
def test_a_write_reads_other_nodes_in_one_cut(nodes: list[Node], statement: str) -> None:
    """A write that reads several nodes (INSERT ... SELECT, a subquery, a CTE, a STABLE function,
    MERGE's source) reads them in one cut."""
    n1, n2, _ = nodes
    sql(n1, "CREATE OR REPLACE FUNCTION acct_total() RETURNS bigint STABLE LANGUAGE sql AS "
            "$$ SELECT sum(balance) FROM acct $$")
    sql(n1, "CREATE TABLE IF NOT EXISTS totals (total bigint)")
    sql(n1, "TRUNCATE totals")
    values = {"total": TOTAL, "on_n2": local_ids(n2)[1]}
    with half_committed(nodes):
        started = time.monotonic()
        sql(n1, statement, values)
        waited = time.monotonic() - started
    assert waited > 0.5  # it waited for the transfer's second phase
    assert sql(n1, "SELECT coalesce(sum(total), %s) FROM totals", (TOTAL,))[0][0] == TOTAL
    assert sql(n1, "SELECT coalesce(sum(balance), %s) FROM acct WHERE id > 1000", (TOTAL,))[0][0] == TOTAL
    assert sql(n1, "SELECT balance FROM acct WHERE id = %s", (values["on_n2"],))[0][0] == 100


def test_ddl_first_in_repeatable_read(nodes: list[Node]) -> None:
    """DDL on a distributed table as a REPEATABLE READ transaction's first statement: its remote
    part goes into the blocks of the transaction's cut."""
    n1 = nodes[0]
    with psycopg.connect(n1.conninfo) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("ALTER TABLE acct ADD COLUMN note text")
        assert conn.execute("SELECT sum(balance), count(note) FROM acct").fetchone() == (TOTAL, 0)
        conn.rollback()
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("ALTER TABLE acct ADD COLUMN note text")
        conn.commit()
        assert conn.execute("SELECT count(*) FROM acct WHERE note IS NULL").fetchone()[0] == 60
        conn.execute("ALTER TABLE acct DROP COLUMN note")
        conn.commit()


def test_serializable_is_refused_on_other_nodes(nodes: list[Node]) -> None:
    """Each node's serializable checks would see only its own part: shoal says so, as a hot
    standby does, rather than promise what it cannot check."""
    n1, n2, _ = nodes
    with psycopg.connect(n1.conninfo) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        here = local_ids(n1)[0]
        assert conn.execute("SELECT balance FROM acct WHERE id = %s", (here,)).fetchone()[0] == 100
        conn.execute("UPDATE acct SET balance = balance + 1 WHERE id = %s", (here,))
        with pytest.raises(psycopg.errors.FeatureNotSupported,
                           match="cannot use serializable mode on other shoal nodes") as failure:
            conn.execute("SELECT balance FROM acct WHERE id = %s", (local_ids(n2)[0],))
        assert "REPEATABLE READ" in (failure.value.diag.message_hint or "")
        conn.rollback()
        conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("UPDATE acct SET balance = 0 WHERE id = %s", (local_ids(n2)[0],))
        conn.rollback()
    assert sql(n1, "SELECT sum(balance) FROM acct")[0][0] == TOTAL


def test_repeatable_read_that_lost_its_cut_on_a_node_fails(nodes: list[Node]) -> None:
    """The worker holding the transaction's cut on n3 ends: a later read there fails rather
    than read a snapshot of its own."""
    n1, _, n3 = nodes
    on_n3 = local_ids(n3)[0]
    with psycopg.connect(n1.conninfo) as reader:
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        assert reader.execute("SELECT sum(balance) FROM acct").fetchone()[0] == TOTAL
        sql(n1, "UPDATE acct SET balance = 0 WHERE id = %s", (on_n3,))
        assert end_workers_in_blocks(n3) == 1
        with pytest.raises(psycopg.errors.TransactionRollback, match='work on node "n3" was lost'):
            reader.execute("SELECT balance FROM acct WHERE id = %s", (on_n3,))


def test_cut_blocks_end_with_their_statements(nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    for _ in range(20):
        assert sql(n1, "SELECT sum(balance) FROM acct")[0][0] == TOTAL
    with psycopg.connect(n1.conninfo) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT sum(balance / (id - id)) FROM acct")
    time.sleep(0.5)
    for node in (n2, n3):
        held = sql(node, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'shoal worker' "
                         "AND state = 'idle in transaction'")[0][0]
        gates = sql(node, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 7")
        assert held == 0 and gates[0][0] == 0


@pytest.mark.parametrize("wrote_there", [False, True])
def test_a_statement_reading_one_node_again_sees_one_snapshot(nodes: list[Node], wrote_there: bool) -> None:
    """A nested loop reads the remote partition once per outer row: in READ COMMITTED too, every
    read belongs to the statement's one snapshot, though a commit lands between two of them; also
    in a transaction that wrote on that node, whose reads there go to its own block."""
    n1, n2, _ = nodes
    row, other = local_ids(n2)[:2]
    partition = sql(n1, "SELECT tableoid::regclass::text FROM acct WHERE id = %s", (row,))[0][0]
    query = (f"SELECT array_agg(x.balance ORDER BY g) FROM generate_series(1, 2) g, LATERAL "
             f"(SELECT balance, pg_sleep(CASE WHEN g = 1 THEN 1 ELSE 0 END) FROM {partition} "
             f"WHERE id = %s + g - g) x")

    def read(**settings: str) -> list[int]:
        bump = threading.Thread(target=lambda: (time.sleep(0.4), sql(
            n2, "UPDATE acct SET balance = balance + 1 WHERE id = %s", (row,))))
        with psycopg.connect(n1.conninfo, autocommit=not wrote_there) as conn:
            for name, value in settings.items():
                conn.execute("SELECT set_config(%s, %s, false)", (name.replace("__", "."), value))
            if wrote_there:
                conn.execute("UPDATE acct SET balance = balance WHERE id = %s", (other,))
            bump.start()
            try:
                return conn.execute(query, (row,)).fetchone()[0]
            finally:
                bump.join()

    assert "Nested Loop" in "\n".join(r[0] for r in sql(n1, "EXPLAIN " + query, (row,)))
    assert read(shoal__consistent_snapshots="off") == [100, 101]  # each read its own snapshot
    assert read() == [101, 101]


@pytest.mark.parametrize("transaction", ["read committed", "repeatable read", "writer"])
def test_a_nested_loop_over_one_block_does_not_wait_for_itself(nodes: list[Node], transaction: str) -> None:
    """The outer scan's answer (2 MB) is more than the worker may send ahead of what we consume;
    the inner scan's requests go to the same block, on the same worker, behind it: the rest of
    the outer answer is taken in first, rather than both waiting for ever."""
    n1, n2, _ = nodes
    sql(n1, "CREATE TABLE IF NOT EXISTS wide (id int PRIMARY KEY, pad text) "
            "WITH (distributed_by = 'id', num_parts = 3)")
    sql(n1, "TRUNCATE wide")
    sql(n1, "INSERT INTO wide SELECT g, repeat(chr(65 + g %% 26), 10000) FROM generate_series(1, 600) g")
    part = sql(n1, "SELECT partition_name FROM shoal.partitions WHERE table_name = 'wide'::regclass "
                   "AND node = 'n2'")[0][0]
    rows = sql(n2, f"SELECT count(*) FROM {part}")[0][0]
    query = (f"SELECT count(a.pad), count(x.pad) FROM {part} a, LATERAL (SELECT pad FROM {part} b "
             f"WHERE b.id = a.id LIMIT 1) x")
    with psycopg.connect(n1.conninfo) as conn:
        conn.execute("SET statement_timeout = '20s'")
        if transaction == "writer":
            conn.execute(f"UPDATE {part} SET pad = pad WHERE id = (SELECT min(id) FROM {part})")
        else:
            conn.execute(f"SET TRANSACTION ISOLATION LEVEL {transaction.upper()}")
        assert conn.execute(query).fetchone() == (rows, rows)

