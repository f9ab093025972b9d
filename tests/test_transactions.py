"""Distributed transactions on a real 3-node cluster: crashes at every step of a two-phase commit,
in-doubt resolution, deadlocks across nodes, a pool that cannot hang.

The coordinator is made to die at a chosen step with ``shoal.crash_point`` (it aborts, and its
whole node restarts as after a crash); participants are killed with ``pg_ctl stop -m immediate``.
Ports 26700-26799 belong to this file.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from nodesql import end_workers_in_blocks, local_ids, running_cluster, sql

from shoal.cluster import Cluster, Node
from shoal.pgbin import pg_bin


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster("shoal-x-", nodes=3, port=26701) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def nodes(cluster: Cluster) -> list[Node]:
    nodes = cluster.nodes
    sql(nodes[0], "CREATE TABLE acct (id int PRIMARY KEY, balance int NOT NULL) "
                  "WITH (distributed_by = 'id', num_parts = 6)")
    sql(nodes[0], "INSERT INTO acct SELECT g, 100 FROM generate_series(1, 60) g")
    return nodes


@pytest.fixture(autouse=True)
def whole_cluster(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test leaves the cluster running, settled, and with its money."""
    yield
    if "nodes" not in request.fixturenames:
        return
    cluster = request.getfixturevalue("cluster")
    cluster.up()
    nodes = cluster.nodes
    wait_for(lambda: settled(nodes), "no prepared transaction left")
    sql(nodes[0], "UPDATE acct SET balance = 100")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(psycopg.OperationalError):
            if condition():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.3)


def prepared(node: Node) -> list[str]:
    return [r[0] for r in sql(node, "SELECT gid FROM pg_prepared_xacts")]


def settled(nodes: list[Node]) -> bool:
    """Resolve what can be resolved now; True once nothing is prepared anywhere."""
    sql(nodes[0], "SELECT * FROM shoal.resolve_in_doubt()")
    return all(not prepared(n) for n in nodes)


def balances(node: Node, ids: tuple[int, ...]) -> list[int]:
    return [r[0] for r in sql(node, "SELECT balance FROM acct WHERE id = ANY(%s) ORDER BY id", (list(ids),))]


TRANSFER = ("BEGIN; UPDATE acct SET balance = balance - 10 WHERE id = 1; "
            "UPDATE acct SET balance = balance + 10 WHERE id BETWEEN 2 AND 60; COMMIT")


def crash_coordinator(node: Node, point: str) -> None:
    """Run a transfer touching every node on ``node``, which dies at ``point``."""
    with pytest.raises(psycopg.OperationalError):
        sql(node, TRANSFER, shoal__crash_point=point)


def stop_immediately(cluster: Cluster, node: Node) -> None:
    subprocess.run([str(pg_bin() / "pg_ctl"), "stop", "-D", str(cluster.data_dir(node)),
                    "-m", "immediate", "-w"], check=True, capture_output=True)


def total(node: Node) -> int:
    return sql(node, "SELECT sum(balance) FROM acct")[0][0]


# -- atomic commit and recovery -------------------------------------------------------------------

def test_commit_names_the_coordinator_and_records_the_decision(nodes: list[Node]) -> None:
    n1, n2, _ = nodes
    sql(n1, TRANSFER)
    assert total(n2) == 6000 + 580
    decided = sql(n1, "SELECT gid FROM shoal.decided ORDER BY decided_at DESC LIMIT 1")[0][0]
    coordinator_xid = decided.split(":")
    assert decided.startswith("shoal:n1:") and len(coordinator_xid) == 4
    assert all(not prepared(n) for n in nodes)
    # only shoal's commit records decisions: clients cannot forge one
    assert sql(n2, "SELECT has_table_privilege('public', 'shoal.decided', 'INSERT')") == [(False,)]


def test_coordinator_crash_before_its_commit_rolls_back_everywhere(nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    crash_coordinator(n1, "after_prepare")
    # the participants hold prepared parts, which the coordinator never committed
    wait_for(lambda: bool(prepared(n2)) or bool(prepared(n3)), "prepared parts on the participants")
    in_doubt = sql(n2, "SELECT node, coordinator, decision FROM shoal.in_doubt")
    wait_for(lambda: sql(n2, "SELECT count(*) FROM shoal.in_doubt WHERE decision = 'aborted'")[0][0] >= 1,
             "the coordinator, back, to report its decision")
    assert {row[1] for row in in_doubt} == {"n1"}
    resolved = sql(n3, "SELECT node, action FROM shoal.resolve_in_doubt()")
    assert resolved and {action for _, action in resolved} == {"rolled back"}
    assert all(not prepared(n) for n in nodes)
    assert total(n3) == 6000
    assert balances(n2, (1, 2)) == [100, 100]


def test_coordinator_crash_after_its_commit_commits_everywhere(nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    crash_coordinator(n1, "after_local_commit")
    # nobody calls resolve_in_doubt: each node's multiplexer settles its own part by itself
    wait_for(lambda: all(not prepared(n) for n in nodes), "the multiplexers to settle", timeout=40)
    assert total(n2) == 6000 + 580
    assert balances(n3, (1, 2, 60)) == [90, 110, 110]


def test_participant_killed_before_prepare_aborts_everything(cluster: Cluster, nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    with psycopg.connect(n1.conninfo) as conn:
        conn.execute("UPDATE acct SET balance = balance - 10 WHERE id = 1")
        conn.execute("UPDATE acct SET balance = balance + 10 WHERE id BETWEEN 2 AND 60")
        stop_immediately(cluster, n3)
        with pytest.raises(psycopg.Error):
            conn.commit()
    cluster.up()
    assert total(n2) == 6000
    assert all(not prepared(n) for n in nodes)


def test_participant_killed_after_prepare_commits_when_back(cluster: Cluster, nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    result: list[object] = []

    def transfer() -> None:
        try:
            sql(n1, TRANSFER, shoal__crash_point="stall_after_prepare")
            result.append("committed")
        except psycopg.Error as exc:
            result.append(exc)

    thread = threading.Thread(target=transfer)
    thread.start()
    wait_for(lambda: bool(prepared(n3)), "the participant to prepare")
    stop_immediately(cluster, n3)
    thread.join(30)
    assert result == ["committed"]  # the decision was taken; n3 missed only the second phase
    assert sql(n2, "SELECT count(*) FROM pg_prepared_xacts")[0][0] == 0
    cluster.up()
    # n3's part lost its hold on n3's gate with the restart: until n3 settles it, a read of
    # every node waits, rather than see the transfer on n1 and n2 and not on n3
    assert first_total(n2) == 6000 + 580
    wait_for(lambda: not prepared(n3), "n3 to settle its prepared part by itself", timeout=40)
    assert total(n1) == 6000 + 580


def first_total(node: Node) -> int:
    """The first total that ``node`` can read while the cluster comes back."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return total(node)
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "the cluster did not come back"
            time.sleep(0.1)


def test_two_phase_commit_can_be_turned_off_for_measurements(nodes: list[Node]) -> None:
    n1, n2, _ = nodes
    sql(n1, TRANSFER, shoal__two_phase_commit="off")
    assert total(n2) == 6000 + 580
    assert all(not prepared(n) for n in nodes)


def test_a_transaction_whose_remote_work_was_lost_cannot_go_on(nodes: list[Node]) -> None:
    """Once the worker holding its block on n2 is gone, the transaction's next statement there
    fails: run outside a block it would commit on its own, and the transaction's rollback could
    not undo it (money from nowhere)."""
    n1, n2, _ = nodes
    on_n2 = local_ids(n2)
    with psycopg.connect(n1.conninfo) as conn:
        conn.execute("UPDATE acct SET balance = balance - 10 WHERE id = %s", (on_n2[0],))
        assert end_workers_in_blocks(n2) == 1
        with pytest.raises(psycopg.errors.TransactionRollback, match='work on node "n2" was lost'):
            conn.execute("UPDATE acct SET balance = balance + 1000 WHERE id = %s", (on_n2[1],))
        conn.rollback()
        # a transaction whose only statement there was its last one fails at COMMIT instead
        conn.execute("UPDATE acct SET balance = balance + 1000 WHERE id = %s", (on_n2[1],))
        conn.execute("UPDATE acct SET balance = balance + 1000 WHERE id = %s", (local_ids(n1)[0],))
        assert end_workers_in_blocks(n2) == 1
        with pytest.raises(psycopg.errors.TransactionRollback, match="was lost"):
            conn.commit()
    assert total(n2) == 6000
    assert all(not prepared(n) for n in nodes)


# -- deadlocks across nodes -----------------------------------------------------------------------


def run_deadlock(first: tuple[Node, list[str]], second: tuple[Node, list[str]]) -> list[object]:
    """Two transactions, each running its first statement, then (staggered) its second, which
    waits for the other; returns how each ended."""
    outcomes: list[object] = [None, None]
    started = threading.Barrier(2)

    def run(index: int, node: Node, statements: list[str]) -> None:
        try:
            with psycopg.connect(node.conninfo) as conn:
                conn.execute(statements[0])
                started.wait()
                time.sleep(0.7 * index)  # the first to wait is the first to give up
                conn.execute(statements[1])
                conn.commit()
                outcomes[index] = "committed"
        except psycopg.Error as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i, *side)) for i, side in enumerate((first, second))]
    begun = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert time.monotonic() - begun < 30
    return outcomes


def assert_one_deadlock_victim(outcomes: list[object]) -> None:
    assert outcomes.count("committed") == 1, outcomes
    victim = next(o for o in outcomes if o != "committed")
    assert isinstance(victim, psycopg.errors.DeadlockDetected), victim
    assert "deadlock across nodes" in str(victim)


@pytest.mark.parametrize("waits", ["remote", "local"])
def test_deadlock_across_nodes_has_one_victim(nodes: list[Node], waits: str) -> None:
    """Two transactions update a row of n1 and a row of n2 in opposite orders.  "remote": each
    waits in a worker on the other node; "local": each waits on its own node for the other's
    remote worker.  Either way no node sees the cycle."""
    n1, n2, _ = nodes
    row = 0 if waits == "remote" else 1  # rows of their own, untouched by the other case
    x, y = local_ids(n1)[row], local_ids(n2)[row]
    first, second = (x, y) if waits == "remote" else (y, x)
    update = "UPDATE acct SET balance = balance + 1 WHERE id = {}"
    outcomes = run_deadlock((n1, [update.format(first), update.format(second)]),
                            (n2, [update.format(second), update.format(first)]))
    assert_one_deadlock_victim(outcomes)
    assert balances(n1, (x, y)) == [101, 101]


def test_more_writers_than_workers_neither_hang_nor_lose_money(nodes: list[Node]) -> None:
    """Transfers from every node, more at once than any pool has workers: the pool can be part of
    a wait cycle, which the deadlock policy breaks; every acknowledged transfer is applied."""
    workers = int(sql(nodes[0], "SHOW shoal.workers")[0][0])
    clients = workers + 4
    done = [0] * clients
    deadline = time.monotonic() + 8

    def client(index: int) -> None:
        node = nodes[index % len(nodes)]
        with psycopg.connect(node.conninfo, autocommit=True) as conn:
            step = 0
            while time.monotonic() < deadline:
                step += 1
                a, b = 1 + (index * 7 + step) % 60, 1 + (index * 13 + step * 5) % 60
                try:
                    with conn.transaction():
                        conn.execute("UPDATE acct SET balance = balance - 1 WHERE id = %s", (a,))
                        conn.execute("UPDATE acct SET balance = balance + 1 WHERE id = %s", (b,))
                    done[index] += 1
                except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                    pass

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert sum(done) > clients
    assert total(nodes[1]) == 6000
