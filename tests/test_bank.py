"""The bank test, in the Jepsen style, on a real 3-node cluster.

Accounts spread over every node; clients on every node move money between random accounts (most
transfers cross nodes) while readers on every node sum the balances.  Money is neither created nor
destroyed: after the run, and after a node is killed and restarted in the middle of one, the total
is intact, nothing stays prepared, and every transfer a client saw commit is there (each transfer
also writes its own row, so acknowledged ones can be checked one by one).

Readers check the cuts (shoal.transactions.snapshots): every single-statement total, and every
total summed account group by account group inside one REPEATABLE READ transaction, is the same.
Ports 26800-26899 belong to this file.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
import pytest
from nodesql import running_cluster, sql

from shoal.cluster import Cluster, Node
from shoal.pgbin import pg_bin

ACCOUNTS = 30
INITIAL = 1000
TOTAL = ACCOUNTS * INITIAL
RETRY = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster("shoal-b-", nodes=3, port=26801) as cluster:
        first = cluster.nodes[0]
        sql(first, "CREATE TABLE bank (id int PRIMARY KEY, balance bigint NOT NULL) "
                   "WITH (distributed_by = 'id', num_parts = 6)")
        sql(first, "CREATE TABLE transfers (id bigint PRIMARY KEY, src int, dst int, amount int) "
                   "WITH (distributed_by = 'id', num_parts = 6)")
        yield cluster


@pytest.fixture
def nodes(cluster: Cluster) -> list[Node]:
    nodes = cluster.nodes
    sql(nodes[0], "TRUNCATE bank, transfers")
    sql(nodes[0], "INSERT INTO bank SELECT g, %s FROM generate_series(1, %s) g", (INITIAL, ACCOUNTS))
    return nodes


@dataclass
class Run:
    nodes: list[Node]
    seconds: float
    acknowledged: list[int] = field(default_factory=list)  # transfers whose COMMIT succeeded
    uncertain: list[int] = field(default_factory=list)  # the connection died during COMMIT
    sums: list[int] = field(default_factory=list)  # single-statement totals
    rr_sums: list[int] = field(default_factory=list)  # account by account in REPEATABLE READ
    read_errors: list[str] = field(default_factory=list)  # SQLSTATE and message
    stop: threading.Event = field(default_factory=threading.Event)
    next_id: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def transfer_id(self) -> int:
        with self.lock:
            self.next_id += 1
            return self.next_id

    def transferrer(self, node: Node, seed: int) -> None:
        rnd = random.Random(seed)
        while not self.stop.is_set():
            try:
                with psycopg.connect(node.conninfo, autocommit=True, connect_timeout=3) as conn:
                    while not self.stop.is_set():
                        self._transfer(conn, rnd)
            except psycopg.OperationalError:
                time.sleep(0.3)  # the node is down: come back when it is

    def _transfer(self, conn: psycopg.Connection, rnd: random.Random) -> None:
        src, dst = rnd.sample(range(1, ACCOUNTS + 1), 2)
        amount, tid = rnd.randint(1, 50), self.transfer_id()
        try:
            conn.execute("BEGIN")
            conn.execute("UPDATE bank SET balance = balance - %s WHERE id = %s", (amount, src))
            conn.execute("UPDATE bank SET balance = balance + %s WHERE id = %s", (amount, dst))
            conn.execute("INSERT INTO transfers VALUES (%s, %s, %s, %s)", (tid, src, dst, amount))
        except RETRY:
            conn.execute("ROLLBACK")
            return
        except psycopg.Error:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
            if conn.closed:
                raise psycopg.OperationalError("connection lost") from None
            return
        try:
            conn.execute("COMMIT")
        except psycopg.OperationalError:
            self.uncertain.append(tid)
            raise
        except psycopg.Error:
            return
        self.acknowledged.append(tid)

    def reader(self, node: Node) -> None:
        while not self.stop.is_set():
            try:
                with psycopg.connect(node.conninfo, autocommit=True, connect_timeout=3) as conn:
                    while not self.stop.is_set():
                        self.sums.append(conn.execute("SELECT sum(balance) FROM bank").fetchone()[0])
                        with conn.transaction():
                            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                            total = 0
                            for account in range(1, ACCOUNTS + 1, 3):  # a third, then the rest
                                total += conn.execute("SELECT coalesce(sum(balance), 0) FROM bank "
                                                      "WHERE id BETWEEN %s AND %s",
                                                      (account, account + 2)).fetchone()[0]
                            self.rr_sums.append(total)
            except psycopg.Error as exc:
                self.read_errors.append(f"{exc.sqlstate}: {exc}")
                time.sleep(0.3)

    def run(self, during=None) -> None:
        threads = [threading.Thread(target=self.transferrer, args=(n, i)) for i, n in
                   enumerate(self.nodes * 2)]
        threads += [threading.Thread(target=self.reader, args=(n,)) for n in self.nodes]
        for t in threads:
            t.start()
        try:
            if during is not None:
                during()
            time.sleep(self.seconds)
        finally:
            self.stop.set()
            for t in threads:
                t.join(60)
        assert not any(t.is_alive() for t in threads), "a client hung"


def settle(cluster: Cluster) -> None:
    """Wait until no node holds a prepared transaction (the multiplexers resolve them)."""
    nodes = cluster.nodes
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(psycopg.Error):
            sql(nodes[0], "SELECT * FROM shoal.resolve_in_doubt()")
            if all(sql(n, "SELECT count(*) FROM pg_prepared_xacts")[0][0] == 0 for n in nodes):
                return
        assert time.monotonic() < deadline, "prepared transactions stayed behind"
        time.sleep(0.5)


def check_books(run: Run) -> None:
    n1 = run.nodes[0]
    assert sql(n1, "SELECT sum(balance) FROM bank")[0][0] == TOTAL
    present = {r[0] for r in sql(n1, "SELECT id FROM transfers")}
    missing = [t for t in run.acknowledged if t not in present]
    assert not missing, f"acknowledged transfers lost: {missing[:10]}"
    assert present <= set(run.acknowledged) | set(run.uncertain)
    # every balance is what the recorded transfers made of it
    expected = {i: INITIAL for i in range(1, ACCOUNTS + 1)}
    for src, dst, amount in sql(n1, "SELECT src, dst, amount FROM transfers"):
        expected[src] -= amount
        expected[dst] += amount
    assert dict(sql(n1, "SELECT id, balance FROM bank")) == expected
    for node in run.nodes[1:]:  # every node reads the same books
        assert sql(node, "SELECT sum(balance) FROM bank")[0][0] == TOTAL
        assert sql(node, "SELECT count(*) FROM transfers")[0][0] == len(present)


def test_transfers_keep_the_books(cluster: Cluster, nodes: list[Node]) -> None:
    run = Run(nodes, seconds=8)
    run.run()
    settle(cluster)
    assert len(run.acknowledged) > 50
    assert run.sums and run.rr_sums
    check_books(run)


def test_a_node_killed_mid_run_loses_nothing(cluster: Cluster, nodes: list[Node]) -> None:
    run = Run(nodes, seconds=6)
    victim = nodes[2]

    def kill_and_restart() -> None:
        time.sleep(3)
        subprocess.run([str(pg_bin() / "pg_ctl"), "stop", "-D", str(cluster.data_dir(victim)),
                        "-m", "immediate", "-w"], check=True, capture_output=True)
        time.sleep(2)
        cluster.up()

    run.run(during=kill_and_restart)
    settle(cluster)
    assert len(run.acknowledged) > 20
    check_books(run)


def test_every_read_sees_the_same_total(cluster: Cluster, nodes: list[Node]) -> None:
    run = Run(nodes, seconds=8)
    run.run()
    settle(cluster)
    assert run.sums and run.rr_sums
    assert set(run.sums) == {TOTAL}, (sorted(set(run.sums))[:10], run.read_errors[:5])
    assert set(run.rr_sums) == {TOTAL}, (sorted(set(run.rr_sums))[:10], run.read_errors[:5])
    # with every node up, a reader may be told to retry (40001), never lose its cut's blocks
    assert not [e for e in run.read_errors if not e.startswith("40001")], run.read_errors[:5]
