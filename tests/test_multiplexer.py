"""The multiplexer end to end on a real two-node cluster (shoal up): results through the channel,
connection counts, cancel and timeout, a node or a worker dying, big results in bounded memory,
strangers on the port, and the caller's privileges.  Ports 26400-26499 belong to this file.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from nodesql import running_cluster

from shoal.cluster import Cluster, Node
from shoal.multiplexer import direct, framing, protocol
from shoal.multiplexer.client import MuxClient
from shoal.multiplexer.config import ipc_path_for
from shoal.multiplexer.peerlink import HandshakeError, PeerLink
from shoal.pgbin import pg_bin

PORT = 26401
MUX_OFFSET = 1000
METRICS_OFFSET = 2000
WORKERS = 8  # shoal.workers' default

SCHEMA_N2 = """
CREATE TABLE items (id int PRIMARY KEY, i2 int2, i8 int8, n numeric(40,10), f4 float4, f8 float8,
    b bool, t text, vc varchar(20), c char(5), by bytea, d date, tm time, ts timestamp,
    tstz timestamptz, iv interval, u uuid, j json, jb jsonb, arr int[], tarr text[]);
INSERT INTO items
SELECT i, i::int2, i * 1000000000::int8, i / 7.0, i / 3.0, i / 9.0, i % 2 = 0, 'text ' || i || ' é',
       'vc' || i, 'c' || (i % 10), decode(md5(i::text), 'hex'), date '2024-01-01' + i,
       time '10:00' + i * interval '1 minute', timestamp '2024-01-01' + i * interval '1 hour',
       timestamptz '2024-01-01 00:00+02' + i * interval '1 hour', i * interval '1 day 2 hours',
       md5(i::text)::uuid, json_build_object('i', i), jsonb_build_object('i', i, 'a', array[i, i]),
       array[i, NULL, i + 1], array['x' || i, NULL]
FROM generate_series(1, 300) i;
INSERT INTO items (id) VALUES (0);  -- a row of NULLs
CREATE VIEW slow AS SELECT id FROM items, pg_sleep(60) LIMIT 1;
CREATE VIEW big AS SELECT g AS id, repeat('x', 20) AS pad FROM generate_series(1, 3000000) g;
CREATE ROLE alice LOGIN;
"""

ITEM_COLUMNS = """(id int, i2 int2, i8 int8, n numeric(40,10), f4 float4, f8 float8, b bool, t text,
    vc varchar(20), c char(5), by bytea, d date, tm time, ts timestamp, tstz timestamptz,
    iv interval, u uuid, j json, jb jsonb, arr int[], tarr text[])"""

SCHEMA_N1 = f"""
CREATE SERVER n2 FOREIGN DATA WRAPPER shoal_fdw OPTIONS (node 'n2');
CREATE FOREIGN TABLE items {ITEM_COLUMNS} SERVER n2;
CREATE FOREIGN TABLE slow (id int) SERVER n2;
CREATE FOREIGN TABLE big (id int, pad text) SERVER n2;
GRANT SELECT ON items TO alice;  -- alice, made on n2, is on n1 too: role DDL is shared
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Cluster, Node, Node]]:
    with running_cluster("shoal-m-", nodes=2, port=PORT) as cluster:
        n1, n2 = cluster.nodes
        sql(n2, SCHEMA_N2)
        sql(n1, SCHEMA_N1)
        wait_for_channel(n1, "n2")
        yield cluster, n1, n2


def sql(node: Node, query: str, params: tuple = (), **connect) -> list[tuple]:
    with psycopg.connect(node.conninfo, autocommit=True, **connect) as conn:
        cur = conn.execute(query, params or None)
        return cur.fetchall() if cur.description else []


def wait_for_channel(node: Node, peer: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.Error):
            if sql(node, "SELECT state FROM shoal.mux_stats WHERE peer = %s", (peer,)) == [("up",)]:
                return
        time.sleep(0.2)
    raise AssertionError(f"the channel from {node.name} to {peer} did not come up")


def shoal_processes(node: Node) -> dict[str, list[int]]:
    rows = sql(node, "SELECT backend_type, pid FROM pg_stat_activity WHERE backend_type LIKE 'shoal%'")
    found: dict[str, list[int]] = {}
    for kind, pid in rows:
        found.setdefault(kind, []).append(pid)
    return found


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_every_type_comes_through_the_channel(cluster) -> None:
    _, n1, n2 = cluster
    query = "SELECT * FROM items ORDER BY id"
    assert sql(n1, query) == sql(n2, query)
    filtered = "SELECT id, t, jb, tarr FROM items WHERE id IN (3, 5, 250) AND tstz > '2024-01-01' ORDER BY id"
    assert sql(n1, filtered) == sql(n2, filtered)


def test_the_view_and_the_metrics_show_the_channel(cluster) -> None:
    _, n1, _ = cluster
    rows = sql(n1, "SELECT peer, state, msgs_out > 0, workers FROM shoal.mux_stats ORDER BY peer")
    assert rows[0][:3] == ("n2", "up", True) and rows[-1][0] == "total"
    assert rows[0][3] == WORKERS
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT + METRICS_OFFSET}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'shoal_mux_peer_up{node="n1",peer="n2"} 1' in text


def test_requests_go_straight_into_the_channel(cluster) -> None:
    """Once its multiplexer has lent a session the channel to n2, the session's requests skip it:
    only the answers come back through it."""
    _, n1, _ = cluster

    def counters() -> tuple[int, int]:
        return sql(n1, "SELECT msgs_out, msgs_in FROM shoal.mux_stats WHERE peer = 'n2'")[0]

    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        conn.execute("SELECT t FROM items WHERE id = 1").fetchall()  # asks for the channel
        out_before, in_before = counters()
        for i in range(200):
            assert len(conn.execute("SELECT t FROM items WHERE id = %s", (i + 1,)).fetchall()) == 1
        out_after, in_after = counters()
    assert in_after - in_before >= 200
    assert out_after - out_before < 50  # heartbeats, not 200 requests


def _job(sql_text: str) -> bytes:
    return protocol.encode_job("execute", sql=sql_text, types=[], params=[], binary=False, role=None)


def _mux_client(node: Node) -> MuxClient:
    """A client of node's multiplexer, as a backend has one."""
    socket_dir, data_dir = sql(node, "SELECT current_setting('unix_socket_directories'), "
                                     "current_setting('data_directory')")[0]
    return MuxClient(ipc_path_for(socket_dir.split(",")[0].strip(), data_dir, node.port))


def test_a_client_that_goes_away_stops_what_it_wrote_into_the_channel(cluster) -> None:
    """n1's multiplexer never saw the request; when the client that wrote it is gone, it has n2
    stop every request of that client."""
    _, n1, n2 = cluster
    client = _mux_client(n1)
    client.request("n2", _job("SELECT 1")).wait()
    assert "n2" in client.direct
    client.request("n2", _job("SELECT pg_sleep(60) AS lent_channel_sleep"))
    client.flush()
    running = ("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'shoal worker' "
               "AND query LIKE '%lent_channel_sleep%' AND state = 'active'")
    deadline = time.monotonic() + 10
    while sql(n2, running) != [(1,)]:
        assert time.monotonic() < deadline, "the request did not reach n2"
        time.sleep(0.1)
    client.direct["n2"].close()
    client.sock.close()
    deadline = time.monotonic() + 10
    while sql(n2, running) != [(0,)]:
        assert time.monotonic() < deadline, "n2 still runs the request of a client that has gone"
        time.sleep(0.2)


def test_a_writer_holding_the_channel_delays_the_others_and_corrupts_nothing(cluster) -> None:
    """While another process holds the channel's write lock (as a backend does for the length of
    one frame), sessions send through their multiplexer, which waits for the lock too."""
    _, n1, _ = cluster
    holder = _mux_client(n1)
    holder.request("n2", _job("SELECT 1")).wait()
    fd = holder.direct["n2"].fd
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM items")  # this session has the channel too
        assert direct.try_lock(fd)
        results: list = []
        reader = threading.Thread(target=lambda: results.append(
            sql(n1, "SELECT count(*), sum(id) FROM items WHERE id > %s", (10,))))
        try:
            reader.start()
            time.sleep(1.0)
            assert not results, "a request left while another process held the channel"
        finally:
            direct.unlock(fd)
        reader.join(10)
        assert results == [[(290, sum(range(11, 301)))]]
        for i in range(1, 50):
            assert conn.execute("SELECT id FROM items WHERE id = %s", (i,)).fetchall() == [(i,)]
    holder.direct["n2"].close()
    holder.sock.close()


def test_one_multiplexer_and_the_pool_per_node(cluster) -> None:
    _, n1, n2 = cluster
    processes = shoal_processes(n2)
    assert len(processes.get("shoal multiplexer", [])) == 1
    assert len(processes.get("shoal worker", [])) == WORKERS


def test_64_clients_cost_the_peer_no_backend(cluster) -> None:
    _, n1, n2 = cluster
    barrier = threading.Barrier(64)
    peak = []

    def client(i: int) -> int:
        with psycopg.connect(n1.conninfo, autocommit=True) as conn:
            barrier.wait(timeout=60)
            total = 0
            for k in range(10):
                total += conn.execute("SELECT count(*) FROM items WHERE id <= %s", (i + k,)).fetchone()[0]
            if i == 0:
                peak.append(sql(n2, "SELECT count(*) FROM pg_stat_activity "
                                    "WHERE backend_type = 'client backend'"))
            return total

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(client, range(64)))
    # every answer reached its own session, though 64 of them wrote into the one channel at once
    assert results == [10 * (i + 1) + 45 for i in range(64)]
    # the peer serves only its own sessions (here: the one counting) plus the pool
    assert peak[0][0][0] <= 1


def test_cancel_of_a_remote_query(cluster) -> None:
    _, n1, _ = cluster
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        pid = conn.info.backend_pid
        timer = threading.Timer(1.0, lambda: sql(n1, "SELECT pg_cancel_backend(%s)", (pid,)))
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT * FROM slow")
        assert time.monotonic() - started < 10
        timer.join()
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (301,)


def test_statement_timeout_of_a_remote_query(cluster) -> None:
    _, n1, n2 = cluster
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '1s'")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            conn.execute("SELECT * FROM slow")
        assert time.monotonic() - started < 10
        conn.execute("RESET statement_timeout")
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (301,)
    # the worker stopped too: nothing of ours is still sleeping on n2
    deadline = time.monotonic() + 10
    while sql(n2, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%slow%' AND state = 'active' "
                  "AND backend_type = 'shoal worker'")[0][0]:
        assert time.monotonic() < deadline, "the remote job was not cancelled"
        time.sleep(0.2)


def test_a_killed_worker_fails_its_job_cleanly(cluster) -> None:
    _, n1, n2 = cluster
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        def kill_the_worker() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                rows = sql(n2, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'shoal worker' "
                               "AND query LIKE '%slow%' AND state = 'active'")
                if rows:
                    sql(n2, "SELECT pg_terminate_backend(%s)", (rows[0][0],))
                    return
                time.sleep(0.1)

        killer = threading.Thread(target=kill_the_worker)
        killer.start()
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT * FROM slow")
        killer.join()
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (301,)
    deadline = time.monotonic() + 20
    while len(shoal_processes(n2).get("shoal worker", [])) < WORKERS:
        assert time.monotonic() < deadline, "the worker was not restarted"
        time.sleep(0.3)


def test_a_big_result_streams_in_bounded_memory(cluster) -> None:
    _, n1, n2 = cluster
    watched = [p for pids in shoal_processes(n1).values() for p in pids]
    watched += [p for pids in shoal_processes(n2).values() for p in pids]
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        watched.append(conn.info.backend_pid)
        # warm up: the session's first remote query starts its interpreter (~40 MB, once)
        conn.execute("SELECT count(*) FROM big WHERE id < 1000").fetchone()
        before = {pid: rss_kb(pid) for pid in watched}
        peak = dict(before)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                for pid in watched:
                    with contextlib.suppress(OSError):
                        peak[pid] = max(peak[pid], rss_kb(pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            assert conn.execute("SELECT count(*), sum(id), max(pad) FROM big").fetchone() == (
                3000000, 3000000 * 3000001 // 2, "x" * 20)
        finally:
            done.set()
            sampler.join()
    # ~100 MB of rows crossed; no process on the way grew by more than a few MB
    growth = {pid: peak[pid] - before[pid] for pid in watched}
    assert max(growth.values()) < 40 * 1024, growth


def _closed_by_peer(sock: socket.socket, timeout: float = 6.0) -> bool:
    """True when the other end closes the connection without sending anything we can use."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass  # a handshake answer may come first; what matters is that it closes
        return True
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def test_strangers_on_the_port_are_refused_and_harmless(cluster) -> None:
    _, n1, _ = cluster
    port = PORT + 1 + MUX_OFFSET  # n2's multiplexer
    # random bytes on raw TCP connections
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(os.urandom(4096))
            assert _closed_by_peer(raw)
    # a protocol frame without the handshake
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        ping = protocol.pack([protocol.message(protocol.Kind.PING, "n1", b"", 1)])
        raw.sendall(framing.encode(ping))
        assert _closed_by_peer(raw)
    # a would-be n1 that does not hold the cluster key: it cannot answer the challenge
    link = PeerLink(socket.create_connection(("127.0.0.1", port)), "n1", b"x" * 64, connector=True,
                    expected="n2")
    link.state = "connecting"
    deadline = time.monotonic() + 5
    with pytest.raises(HandshakeError, match="could not prove the cluster key"):
        link.writable()
        while time.monotonic() < deadline:
            link.read()
            time.sleep(0.05)
    link.close()
    # the multiplexer goes on serving
    assert sql(n1, "SELECT count(*) FROM items") == [(301,)]
    assert sql(n1, "SELECT state FROM shoal.mux_stats WHERE peer = 'n2'") == [("up",)]


def test_remote_work_runs_with_the_callers_privileges(cluster) -> None:
    _, n1, n2 = cluster
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        sql(n1, "SELECT count(*) FROM items", user="alice")
    sql(n2, "GRANT SELECT ON items TO alice")
    try:
        assert sql(n1, "SELECT count(*) FROM items", user="alice") == [(301,)]
    finally:
        sql(n2, "REVOKE SELECT ON items FROM alice")


def test_a_ping_run_measures_the_channel(cluster) -> None:
    _, n1, _ = cluster
    before = sql(n1, "SELECT msgs_out, msgs_in FROM shoal.mux_stats WHERE peer = 'n2'")[0]
    rows = sql(n1, "SELECT * FROM shoal.ping('n2', 20000, 256)")
    assert len(rows) == 1
    node, pings, seconds, rate, p50, p99, longest = rows[0]
    assert (node, pings) == ("n2", 20000)
    assert seconds > 0 and rate == pytest.approx(pings / seconds)
    assert 0 < p50 <= p99 <= longest
    after = sql(n1, "SELECT msgs_out, msgs_in FROM shoal.mux_stats WHERE peer = 'n2'")[0]
    assert after[0] - before[0] >= 20000 and after[1] - before[1] >= 20000  # real messages, both ways
    # one at a time by default: the round trip between the two multiplexers
    assert sql(n1, "SELECT node, pings FROM shoal.ping('n2', 50)") == [("n2", 50)]


@pytest.mark.parametrize(("call", "error"), [
    ("shoal.ping('nowhere')", 'node "nowhere" is not another node of shoal.nodes'),
    ("shoal.ping('n1')", 'node "n1" is not another node of shoal.nodes'),
    ("shoal.ping('n2', 0)", "the number of pings must be between 1 and 10,000,000"),
    ("shoal.ping('n2', 10, 0)", "the pings in flight must be between 1 and 65,536"),
    ("shoal.ping('n2', 10, 100000)", "the pings in flight must be between 1 and 65,536"),
])
def test_a_ping_run_refuses_what_it_cannot_do(cluster, call: str, error: str) -> None:
    _, n1, _ = cluster
    with pytest.raises(psycopg.Error, match=error):
        sql(n1, f"SELECT * FROM {call}")
    assert sql(n1, "SELECT pings FROM shoal.ping('n2', 10)") == [(10,)]  # nothing left behind


def test_only_superusers_ping_by_default(cluster) -> None:
    _, n1, _ = cluster
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        sql(n1, "SELECT * FROM shoal.ping('n2')", user="alice")


def test_a_cancelled_ping_run_stops(cluster) -> None:
    _, n1, _ = cluster
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT * FROM shoal.ping('n2', 10000000, 1)")
        conn.execute("RESET statement_timeout")
        # the multiplexer dropped the run: the channel is quiet again
        sent = sql(n1, "SELECT msgs_out FROM shoal.mux_stats WHERE peer = 'n2'")[0][0]
        time.sleep(0.5)
        assert sql(n1, "SELECT msgs_out FROM shoal.mux_stats WHERE peer = 'n2'")[0][0] - sent < 20
        assert conn.execute("SELECT pings FROM shoal.ping('n2', 10)").fetchone() == (10,)


def test_a_dead_peer_is_a_clean_error_and_comes_back(cluster) -> None:
    c, n1, n2 = cluster
    data_dir = sql(n2, "SHOW data_directory")[0][0]
    with psycopg.connect(n1.conninfo, autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM items")  # the channel is lent: slow goes straight in

        def stop_n2() -> None:
            time.sleep(1.0)
            subprocess.run([str(pg_bin() / "pg_ctl"), "stop", "-D", data_dir, "-m", "immediate", "-w"],
                           check=True, capture_output=True)

        def long_ping_run() -> None:  # a million round trips one at a time: n2 dies first
            with psycopg.connect(n1.conninfo, autocommit=True) as other:
                other.execute("SELECT * FROM shoal.ping('n2', 1000000, 1)")

        stopper = threading.Thread(target=stop_n2)
        stopper.start()
        started = time.monotonic()
        with ThreadPoolExecutor(1) as pool:
            pinging = pool.submit(long_ping_run)
            with pytest.raises(psycopg.OperationalError, match='node "n2"'):
                conn.execute("SELECT * FROM slow")
            with pytest.raises(psycopg.OperationalError, match='node "n2" is unreachable'):
                pinging.result(timeout=15)
        assert time.monotonic() - started < 15
        stopper.join()
        with pytest.raises(psycopg.OperationalError, match='node "n2"'):
            conn.execute("SELECT count(*) FROM items")
        with pytest.raises(psycopg.OperationalError, match='node "n2" is unreachable'):
            conn.execute("SELECT * FROM shoal.ping('n2')")
        # maintenance goes on without the node: ANALYZE skips its tables, with a warning
        notices: list[str] = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        conn.execute("ALTER FOREIGN TABLE items OPTIONS (ADD analyze 'true')")
        conn.execute("ANALYZE items")
        assert any("ANALYZE skipped" in n and "unreachable" in n for n in notices), notices
        c.up(nodes=2, port=PORT)
        wait_for_channel(n1, "n2")
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (301,)
        conn.execute("ANALYZE items")
        assert conn.execute("SELECT reltuples FROM pg_class WHERE relname = 'items'").fetchone() == (301,)
        # the session was lent the new channel: its requests skip the multiplexer again
        sent_before = sql(n1, "SELECT msgs_out FROM shoal.mux_stats WHERE peer = 'n2'")[0][0]
        for i in range(100):
            assert conn.execute("SELECT id FROM items WHERE id = %s", (i + 1,)).fetchall() == [(i + 1,)]
        assert sql(n1, "SELECT msgs_out FROM shoal.mux_stats WHERE peer = 'n2'")[0][0] - sent_before < 50
