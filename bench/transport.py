"""Benchmark: shoal's transport (issue 3, "Benchmarks"): multiplexer pings, remote point queries and
a bulk read, through shoal_fdw and through postgres_fdw, on a throwaway two-node shoal cluster.

The parts (``--parts``, all by default, in this order):

* ``ping``: pings between the multiplexers of n1 and n2, sent by n1's multiplexer itself
  (``shoal.ping()``), one at a time and with 16 to 1024 in flight: pings/s, the issue's measure,
  goal 500k/s.  Then pings from a client on n1 through n1's multiplexer to n2's and back, one at a
  time (latency p50/p99, ``MuxClient.ping``) and pipelined (a window of K in flight), and the same
  to n1's own multiplexer to separate the local hop; as a floor, a bare pyzmq DEALER/ROUTER echo
  between two Python processes over TCP.
* ``point``: ``SELECT abalance FROM <t> WHERE aid = :aid`` (pgbench -M prepared, random aid) at
  1, 8 and 64 clients on n1 against ``acc`` on n2 through shoal_fdw (``acc_shoal``) and
  postgres_fdw (``acc_pgfdw``, async_capable), and a plain table on n1 (``acc_local``) as the
  reference; the server backends on n2 are counted while it runs.  Goal: shoal >= 2x postgres_fdw.
* ``cpu``: CPU time per remote point query per kind of process (pgbench, n1's client backends,
  both multiplexers, n2's workers, n2's backends), over a fixed number of queries (pgbench -t),
  from /proc: what to optimise.
* ``bulk``: ``SELECT count(*), sum(abalance), max(filler)`` over a 1M-row table on n2 through
  shoal_fdw and postgres_fdw (fetch_size 10000, and the default 100); rows/s.  Goal: >= 2x.

The multiplexer's local socket belongs to the servers' OS user, so the ping part runs as that
user: as root this script starts it with ``runuser -u postgres -- python bench/pingpong.py``
(everything else runs as root; the servers run as ``postgres`` either way).  Run it as root, or as
the user that may run the servers::

    python bench/transport.py                 # (re-executes itself with /opt/shoal/venv/bin/python)
    python bench/transport.py --seconds 5 --parts point,cpu

Results go to ``bench/results/`` (JSON and Markdown, also printed).  The machine has few cores
and may be shared: each part reports how many cores other processes kept busy meanwhile.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = Path("/opt/shoal/venv")
# `bench` must be importable; the installed `shoal` (it has shoal.multiplexer) must win over the
# source tree, so the repository goes last on the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO] + [str(REPO)]


def _reexec_in_venv() -> None:
    """Use shoal's venv when this interpreter lacks what the benchmark needs (pyzmq, psycopg)."""
    try:
        import psycopg  # noqa: F401
        import zmq  # noqa: F401

        import shoal.multiplexer.client  # noqa: F401
    except ImportError:
        python = VENV / "bin" / "python"
        if python.exists() and Path(sys.prefix).resolve() != VENV.resolve():
            os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])
        raise


_reexec_in_venv()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import psycopg  # noqa: E402

from bench import cpu  # noqa: E402
from bench import pgbench as pgb  # noqa: E402
from bench.backends import BackendSampler  # noqa: E402
from bench.report import cpu_model, git_revision, positive_ints, progress  # noqa: E402
from shoal import osuser  # noqa: E402
from shoal.cluster import Cluster, Node, port_in_use  # noqa: E402
from shoal.multiplexer.config import METRICS_PORT_OFFSET, MUX_PORT_OFFSET, ipc_path_for  # noqa: E402
from shoal.pgbin import pg_bin  # noqa: E402

RESULTS = REPO / "bench" / "results"
PARTS = ("ping", "point", "cpu", "bulk")
PING_GOAL = 500_000
RATIO_GOAL = 2.0
COLUMNS = "aid int, abalance int, filler char(84)"
# postgres_fdw would push the aggregate down and ship one row: the subquery (OFFSET 0 keeps it
# from being pulled up) makes every system ship all the rows and aggregate them on n1.
BULK_QUERY = "SELECT count(*), sum(abalance), max(filler) FROM (SELECT * FROM {table} OFFSET 0) AS s"
POINT_SYSTEMS = [  # name, table on n1
    ("local table on n1", "acc_local"),
    ("shoal_fdw", "acc_shoal"),
    ("postgres_fdw", "acc_pgfdw"),
]
BULK_SYSTEMS = [  # name, table, node that runs the query
    ("shoal_fdw", "bulk_shoal", "n1"),
    ("postgres_fdw fetch_size 10000", "bulk_pgfdw", "n1"),
    ("postgres_fdw fetch_size 100 (default)", "bulk_pgfdw_default", "n1"),
    ("plain scan on n2 (reference)", "bulk", "n2"),
]
SHOAL, PGFDW, LOCAL = "shoal_fdw", "postgres_fdw", "local table on n1"
BULK_PGFDW, BULK_PGFDW_DEFAULT = "postgres_fdw fetch_size 10000", "postgres_fdw fetch_size 100 (default)"
CPU_COLUMNS = [  # (node or "pgbench", kind) -> column
    (("pgbench", ""), "pgbench"),
    (("n1", "client backends"), "n1 backends"),
    (("n1", "multiplexer"), "n1 mux"),
    (("n2", "multiplexer"), "n2 mux"),
    (("n2", "workers"), "n2 workers"),
    (("n2", "client backends"), "n2 backends"),
]




# -- the machine ---------------------------------------------------------------------------------



def free_port(requested: int | None) -> int:
    """A base port P with P, P+1 (PostgreSQL), their multiplexer and metrics ports all free."""
    def free(base: int) -> bool:
        return not any(port_in_use(base + i + offset) for i in (0, 1)
                       for offset in (0, MUX_PORT_OFFSET, METRICS_PORT_OFFSET))

    if requested is not None:
        if not free(requested):
            raise SystemExit(f"a port of {requested}, {requested + 1} (+{MUX_PORT_OFFSET}, "
                             f"+{METRICS_PORT_OFFSET}) is in use: choose another --port")
        return requested
    for base in range(5800, 6400, 10):
        if free(base):
            return base
    raise SystemExit("no free ports between 5800 and 6400: pass --port")


# -- the cluster ---------------------------------------------------------------------------------

class Bench:
    """The throwaway cluster and what the parts share."""

    def __init__(self, args: argparse.Namespace, cluster: Cluster, workdir: Path) -> None:
        self.args = args
        self.cluster = cluster
        self.workdir = workdir
        self.nodes: dict[str, Node] = {n.name: n for n in cluster.nodes}
        self.pgbench = pg_bin() / "pgbench"
        self.conns: dict[str, psycopg.Connection[Any]] = {}
        self.postmasters: dict[str, int] = {}
        self.own_backends: set[int] = set()  # pids of this script's own sessions

    def connect(self) -> None:
        for name, node in self.nodes.items():
            conn = psycopg.connect(node.conninfo, autocommit=True)
            self.conns[name] = conn
            self.own_backends.add(conn.info.backend_pid)
            pid = self.cluster.pid(node)
            assert pid is not None, f"{name} does not run"
            self.postmasters[name] = pid

    def sql(self, node: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        cur = self.conns[node].execute(query, params)
        return cur.fetchall() if cur.description else []

    def mux_pid(self, node: str) -> int:
        pids = cpu.pids_of_kind(self.postmasters[node], "multiplexer")
        if not pids:
            raise RuntimeError(f"node {node} has no multiplexer process")
        return pids[0]

    def ipc_path(self, node: str) -> str:
        """The multiplexer's local socket (multiplexer/config.py decides where it is)."""
        return ipc_path_for(str(self.cluster.node_dir(self.nodes[node])),
                            str(self.cluster.data_dir(self.nodes[node])), self.nodes[node].port)

    def client_backends(self) -> list[int]:
        """Client backends of either node other than this script's sessions."""
        pms = {pm: node for node, pm in self.postmasters.items()}
        return [pid for pid in cpu.children_of(set(pms))
                if pid not in self.own_backends and cpu.kind_of(cpu.title(pid)) in ("client backends", None)]

    def wait_quiet(self, timeout: float = 15.0) -> None:
        """Until the client backends of earlier runs have exited (and were reaped).  This script's
        own session on n1 keeps a postgres_fdw connection to n2 once it used acc_pgfdw: closed too."""
        if self.sql("n1", "SELECT to_regproc('postgres_fdw_disconnect_all') IS NOT NULL")[0][0]:
            self.sql("n1", "SELECT postgres_fdw_disconnect_all()")
        deadline = time.monotonic() + timeout
        while self.client_backends():
            if time.monotonic() > deadline:
                raise RuntimeError(f"client backends still running: {self.client_backends()}")
            time.sleep(0.05)

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.conns = {}


def set_up(bench: Bench, rows: int, bulk_rows: int, parts: set[str]) -> None:
    """Settings, the tables on n2, the local reference on n1 and the foreign tables on n1."""
    for node in ("n1", "n2"):
        # A quiet, throwaway cluster: no autovacuum to disturb the CPU accounting, no JIT in the
        # bulk aggregate, no waiting for WAL flushes while loading.
        for name, value in (("autovacuum", "off"), ("jit", "off"), ("synchronous_commit", "off")):
            bench.sql(node, f"ALTER SYSTEM SET {name} = {value}")
        bench.sql(node, "SELECT pg_reload_conf()")
    fill = "SELECT i, (i::int8 * 7919 %% 100000 - 50000)::int4, md5(i::text) FROM generate_series(1, %s) AS i"
    progress(f"loading acc ({rows:,} rows) on n2 and acc_local on n1")
    for node, table in (("n2", "acc"), ("n1", "acc_local")):
        bench.sql(node, f"CREATE TABLE {table} ({COLUMNS}, PRIMARY KEY (aid))")
        bench.sql(node, f"INSERT INTO {table} {fill}", (rows,))
        bench.sql(node, f"VACUUM (FREEZE, ANALYZE) {table}")
    if "bulk" in parts:
        progress(f"loading bulk ({bulk_rows:,} rows) on n2")
        bench.sql("n2", f"CREATE TABLE bulk ({COLUMNS})")
        bench.sql("n2", f"INSERT INTO bulk {fill}", (bulk_rows,))
        bench.sql("n2", "VACUUM (FREEZE, ANALYZE) bulk")
    n2 = bench.nodes["n2"]
    progress("creating the foreign tables on n1 (shoal_fdw and postgres_fdw servers for n2)")
    for statement in (
        "CREATE SERVER n2_shoal FOREIGN DATA WRAPPER shoal_fdw OPTIONS (node 'n2')",
        f"CREATE FOREIGN TABLE acc_shoal ({COLUMNS}) SERVER n2_shoal OPTIONS (table_name 'acc')",
        f"CREATE FOREIGN TABLE bulk_shoal ({COLUMNS}) SERVER n2_shoal OPTIONS (table_name 'bulk')",
        "CREATE EXTENSION postgres_fdw",
        # n2 is a shoal node: the REPEATABLE READ transactions postgres_fdw opens there would each
        # take a shoal cut of every node, which is not what the baseline measures
        f"CREATE SERVER n2_pgfdw FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', "
        f"port '{n2.port}', dbname 'postgres', async_capable 'true', "
        "options '-c shoal.consistent_snapshots=off')",
        "CREATE USER MAPPING FOR postgres SERVER n2_pgfdw OPTIONS (user 'postgres')",
        f"CREATE FOREIGN TABLE acc_pgfdw ({COLUMNS}) SERVER n2_pgfdw OPTIONS (table_name 'acc')",
        f"CREATE FOREIGN TABLE bulk_pgfdw ({COLUMNS}) SERVER n2_pgfdw "
        f"OPTIONS (table_name 'bulk', fetch_size '10000')",
        f"CREATE FOREIGN TABLE bulk_pgfdw_default ({COLUMNS}) SERVER n2_pgfdw OPTIONS (table_name 'bulk')",
    ):
        bench.sql("n1", statement)


def remote_sql(bench: Bench, node: str, query: str, table: str) -> str | None:
    """The Remote SQL of the scan of `table` in the plan of `query` (None: not a foreign scan)."""
    plan = bench.sql(node, "EXPLAIN (VERBOSE, FORMAT JSON) " + query)[0][0][0]["Plan"]
    stack = [plan]
    while stack:
        item = stack.pop()
        if item.get("Relation Name") == table or table in item.get("Relations", ""):
            return item.get("Remote SQL")
        stack.extend(item.get("Plans", []))
    raise RuntimeError(f"no scan of {table} in the plan of {query}: {json.dumps(plan)}")


# -- part 1: pings -------------------------------------------------------------------------------

def part_ping(bench: Bench) -> dict[str, Any]:
    args = bench.args
    spec = {
        "ipc_path": bench.ipc_path("n1"),
        "targets": ["n2", "n1"],
        "windows": args.windows,
        "seconds": args.ping_seconds,
        "latency_count": args.latency_count,
        "mux_pids": {"n1": bench.mux_pid("n1"), "n2": bench.mux_pid("n2")},
        "echo": True,
    }
    child = [sys.executable, str(REPO / "bench" / "pingpong.py"), "--spec", json.dumps(spec)]
    argv = osuser.as_user_argv(bench.cluster.service_user or osuser.current_user(), child)
    progress(f"ping client as OS user {bench.cluster.service_user}: "
             f"{shlex.join(argv[:-1])} '<spec>'")
    result = subprocess.run(argv, stdout=subprocess.PIPE, text=True, cwd="/", stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"the ping client exited with {result.returncode}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    data["command"] = shlex.join(argv[:-1]) + " '" + json.dumps(spec) + "'"
    best = max(data["mux_to_mux"], key=lambda r: r["rate_per_s"])
    data["best_remote"] = {"rate_per_s": best["rate_per_s"], "window": best["window"],
                           "of_goal": round(best["rate_per_s"] / PING_GOAL, 3)}
    return data


# -- part 2: remote point queries ----------------------------------------------------------------

def part_point(bench: Bench) -> dict[str, Any]:
    args = bench.args
    n1 = bench.nodes["n1"]
    scripts = {table: pgb.point_query_script(bench.workdir / f"point_{table}.sql", table, args.rows)
               for _, table in POINT_SYSTEMS}
    checks: dict[str, Any] = {}
    answers = {}
    for name, table in POINT_SYSTEMS:
        query = f"SELECT abalance FROM {table} WHERE aid = 4242"
        answers[name] = bench.sql("n1", query)
        checks[name] = {"table": table, "remote_sql": remote_sql(bench, "n1", query, table)}
    if len({repr(a) for a in answers.values()}) != 1:
        raise RuntimeError(f"the systems answer differently: {answers}")
    progress(f"same answer everywhere ({answers[LOCAL]}); remote SQL: "
             + "; ".join(f"{n}: {c['remote_sql']}" for n, c in checks.items() if c["remote_sql"]))
    for _name, table in POINT_SYSTEMS:  # warm-up: caches, prepared plans, connections
        pgb.run(bench.pgbench, n1.port, scripts[table], 8, seconds=1)
    runs = []
    for round_no, clients in enumerate(args.clients):
        order = POINT_SYSTEMS[round_no % 3:] + POINT_SYSTEMS[:round_no % 3]
        for name, table in order:
            bench.wait_quiet()
            entry: dict[str, Any] = {"system": name, "table": table, "clients": clients}
            try:
                conninfos = {name: node.conninfo for name, node in bench.nodes.items()}
                with BackendSampler(conninfos, ignore=bench.own_backends) as counter:
                    run = pgb.run(bench.pgbench, n1.port, scripts[table], clients, seconds=args.seconds)
                entry.update(vars(run))
                entry["backends"] = counter.most
                n2 = counter.most["n2"]
                progress(f"{clients:>2} clients {name:<18} {run.tps:10,.0f} tps  {run.latency_ms:7.3f} ms"
                         f"  n2: {n2.get('client backend', 0)} client backends, "
                         f"{n2.get('shoal worker', 0)} shoal workers")
            except pgb.PgbenchError as exc:
                entry["error"] = str(exc)
                progress(f"{clients:>2} clients {name}: FAILED: {exc}")
            runs.append(entry)
    ratios = []
    for clients in args.clients:
        by = {r["system"]: r for r in runs if r["clients"] == clients and "tps" in r}
        if SHOAL in by and PGFDW in by:
            row = {"clients": clients, "shoal_vs_pgfdw": round(by[SHOAL]["tps"] / by[PGFDW]["tps"], 2)}
            if LOCAL in by:
                row["shoal_vs_local"] = round(by[SHOAL]["tps"] / by[LOCAL]["tps"], 3)
                row["pgfdw_vs_local"] = round(by[PGFDW]["tps"] / by[LOCAL]["tps"], 3)
            ratios.append(row)
    return {"checks": checks, "runs": runs, "ratios": ratios}


# -- part 4: CPU per remote point query ----------------------------------------------------------

def part_cpu(bench: Bench) -> dict[str, Any]:
    args = bench.args
    n1 = bench.nodes["n1"]
    clients = args.cpu_clients
    per_client = max(1, args.cpu_queries // clients)
    queries = per_client * clients
    results = []
    for name, table in POINT_SYSTEMS:
        script = pgb.point_query_script(bench.workdir / f"cpu_{table}.sql", table, args.rows)
        pgb.run(bench.pgbench, n1.port, script, clients, transactions=max(1, 200 // clients))  # warm-up
        bench.wait_quiet()
        tree = cpu.ProcessTree(bench.postmasters, interval=0.2)
        tree.start()
        try:
            run = pgb.run(bench.pgbench, n1.port, script, clients, transactions=per_client)
        except pgb.PgbenchError as exc:
            tree.stop()
            results.append({"system": name, "table": table, "error": str(exc)})
            progress(f"cpu {name}: FAILED: {exc}")
            continue
        bench.wait_quiet()  # the backends of the run have exited and were reaped
        usage = tree.stop()
        seconds: dict[str, float] = {"pgbench": run.cpu_s}
        for node, kinds in usage.items():
            for kind, used in kinds.items():
                seconds[f"{node} {kind}"] = used
        us = {key: round(value * 1e6 / queries, 1) for key, value in sorted(seconds.items())}
        total = round(sum(seconds.values()) * 1e6 / queries, 1)
        results.append({
            "system": name, "table": table, "clients": clients, "queries": queries, "tps": run.tps,
            "command": run.command, "cpu_us_per_query": us, "total_us_per_query": total,
            "exited_reaped_s": {k: v / cpu.CLK_TCK for k, v in tree.exited_reaped.items()},
            "exited_seen_s": {k: v / cpu.CLK_TCK for k, v in tree.exited_seen.items()},
        })
        main = ", ".join(f"{k} {v}" for k, v in us.items() if v >= 1.0)
        progress(f"cpu {name}: {total} us per query ({main})")
    return {"clients": clients, "queries": queries, "systems": results}


# -- part 3: bulk --------------------------------------------------------------------------------

def part_bulk(bench: Bench) -> dict[str, Any]:
    args = bench.args
    systems: list[dict[str, Any]] = []
    answers = {}
    for name, table, node in BULK_SYSTEMS:
        query = BULK_QUERY.format(table=table)
        sql_remote = remote_sql(bench, node, query, table)
        if sql_remote is not None and "count(" in sql_remote:
            raise RuntimeError(f"{name}: the aggregate was pushed down ({sql_remote})")
        start = time.perf_counter()
        answers[name] = bench.sql(node, query)[0]  # also the warm-up
        progress(f"{name}: warm-up {time.perf_counter() - start:.2f}s, remote SQL: {sql_remote}")
        systems.append({"system": name, "table": table, "node": node, "query": query,
                        "remote_sql": sql_remote, "times": []})
    if len({repr(a) for a in answers.values()}) != 1:
        raise RuntimeError(f"the systems answer differently: {answers}")
    for round_no in range(args.repeat):
        order = systems[round_no % len(systems):] + systems[:round_no % len(systems)]
        timings = []
        for entry in order:
            start = time.perf_counter()
            bench.sql(entry["node"], entry["query"])
            entry["times"].append(time.perf_counter() - start)
            timings.append(f"{entry['table']} {entry['times'][-1]:.2f}s")
        progress(f"bulk round {round_no + 1}/{args.repeat}: " + ", ".join(timings))
    for entry in systems:  # one more run each, for the CPU time per kind of process
        bench.wait_quiet()
        tree = cpu.ProcessTree(bench.postmasters, interval=0.2)
        tree.start()
        bench.sql(entry["node"], entry["query"])
        usage = tree.stop()
        seconds = {f"{node} {kind}": round(v, 2) for node, kinds in usage.items() for kind, v in kinds.items()
                   if v >= 0.005}
        entry["cpu_s"] = seconds
        entry["cpu_total_s"] = round(sum(seconds.values()), 2)
    for entry in systems:
        entry["best_s"] = min(entry["times"])
        entry["median_s"] = statistics.median(entry["times"])
        entry["rows_per_s"] = round(args.bulk_rows / entry["best_s"])
    by = {e["system"]: e for e in systems}
    ratios = {
        "shoal_vs_pgfdw_10000": round(by[BULK_PGFDW]["best_s"] / by[SHOAL]["best_s"], 2),
        "shoal_vs_pgfdw_default": round(by[BULK_PGFDW_DEFAULT]["best_s"] / by[SHOAL]["best_s"], 2),
    }
    return {"rows": args.bulk_rows, "answer": [str(v) for v in answers[SHOAL]], "systems": systems,
            "ratios": ratios}


# -- reporting -----------------------------------------------------------------------------------

def _fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _load_line(load: dict[str, Any] | None) -> str:
    if not load:
        return ""
    return (f"Machine load during this part ({load['seconds']} s): {load['busy_cores']} cores busy, "
            f"of which {load['other_cores']} by processes outside this benchmark; "
            f"load average {load['loadavg_1m']:.2f}.")


def markdown(meta: dict[str, Any], parts: dict[str, Any]) -> str:
    out = [
        f"# shoal transport benchmark ({meta['when']})",
        "",
        f"`{meta['command']}`",
        "",
        f"Machine: {meta['cpu']}, {meta['nproc']} CPUs (nproc), kernel {meta['kernel']}; "
        f"PostgreSQL {meta.get('server_version', '?')}; shoal {meta['git']}; "
        f"shoal.workers = {meta.get('shoal_workers', '?')}; "
        f"load average at start {meta['loadavg_start']}.",
        "",
    ]
    ping = parts.get("ping")
    if ping and "error" not in ping:
        out += ["## Ping between the multiplexers (n1's multiplexer -> n2's, `shoal.ping()`)", "",
                "n1's multiplexer sends the pings itself and matches the answers: the channel and both "
                "event loops, no backend. In flight 1: the unloaded round trip. CPU us per ping of each "
                f"multiplexer; goal {PING_GOAL:,} pings/s.", ""]
        rows = []
        for r in ping["mux_to_mux"]:
            c = r["cpu_us_per_ping"]
            rows.append([str(r["window"]), _fmt(r["rate_per_s"]), f"{r['rate_per_s'] / PING_GOAL:.2f}",
                         _fmt(r["p50_us"], 1), _fmt(r["p99_us"], 1), _fmt(c.get("multiplexer n1", 0), 2),
                         _fmt(c.get("multiplexer n2", 0), 2)])
        out += _table(["in flight", "pings/s", "of goal", "p50 us", "p99 us", "mux n1 us", "mux n2 us"],
                      rows, "rrrrrrr")
        b = ping["best_remote"]
        out += ["", f"Best: **{b['rate_per_s']:,} pings/s** ({b['window']} in flight): "
                f"{b['of_goal']:.2f}x the 500k goal.", ""]
        out += ["## Ping from a client (client on n1 -> n1's multiplexer [-> n2's multiplexer])", "",
                f"Local hop (client <-> its multiplexer): {ping.get('local_hop', '?')}; between the "
                "multiplexers: one TCP connection, length-prefixed frames (peers proved by HMAC).", "",
                "One at a time (MuxClient.ping; the bare echo: one frame at a time over TCP):", ""]
        hops = {"n1": " (local hop only)", "n2": " (both multiplexers)"}
        rows = [[f"n1 -> {r['target']}" + hops.get(r["target"], ""),
                 _fmt(r["p50_us"], 1), _fmt(r["p99_us"], 1), _fmt(r["mean_us"], 1), _fmt(r["rate_per_s"])]
                for r in ping["latency"]]
        if ping.get("echo_latency"):
            e = ping["echo_latency"]
            rows.append(["bare pyzmq echo, 2 processes, TCP", _fmt(e["p50_us"], 1), _fmt(e["p99_us"], 1),
                         _fmt(e["mean_us"], 1), _fmt(e["rate_per_s"])])
        out += _table(["path", "p50 us", "p99 us", "mean us", "round trips/s"], rows, "lrrrr")
        out += ["", f"Pipelined ({ping['pipelined'][0]['seconds']:.0f} s each; single: one ping per frame "
                "from the client, batched: the client refills its window with one frame; CPU us per ping of "
                "each process; goal 500,000 pings/s):", ""]
        rows = []
        for r in ping["pipelined"]:
            c = r["cpu_us_per_ping"]
            rows.append([f"n1 -> {r['target']}", str(r["window"]), r["framing"], _fmt(r["rate_per_s"]),
                         f"{r['rate_per_s'] / PING_GOAL:.2f}", str(r["pongs_per_frame"]),
                         _fmt(c["client"], 2), _fmt(c.get("multiplexer n1", 0), 2),
                         _fmt(c.get("multiplexer n2", 0), 2)])
        for r in ping["echo_pipelined"]:
            c = r["cpu_us_per_ping"]
            rows.append(["bare pyzmq echo (TCP)", str(r["window"]), r["framing"], _fmt(r["rate_per_s"]),
                         f"{r['rate_per_s'] / PING_GOAL:.2f}", "1", _fmt(c["client"], 2),
                         "echo " + _fmt(c.get("echo server", 0), 2), ""])
        out += _table(["path", "window", "framing", "pings/s", "of goal", "pongs/frame", "client us",
                       "mux n1 us", "mux n2 us"], rows, "lrlrrrrrr")
        out += ["", _load_line(ping.get("load")), ""]
    point = parts.get("point")
    if point and "error" not in point:
        out += ["## Remote point query (pgbench -M prepared on n1, "
                "`SELECT abalance FROM t WHERE aid = :aid`)",
                "", f"{meta['rows']:,} rows, {meta['seconds']} s per run; n2 backends: the most seen in "
                "pg_stat_activity during the run (client backends / shoal workers).", ""]
        rows = []
        ratio_of = {r["clients"]: r for r in point["ratios"]}
        for r in point["runs"]:
            if "error" in r:
                rows.append([str(r["clients"]), r["system"], "FAILED", r["error"][:80], "", "", ""])
                continue
            n2 = r["backends"]["n2"]
            ratio = ratio_of.get(r["clients"], {}).get("shoal_vs_pgfdw") if r["system"] == SHOAL else None
            rows.append([str(r["clients"]), r["system"], _fmt(r["tps"]), _fmt(r["latency_ms"], 3),
                         f"**{ratio:.2f}x**" if ratio is not None else "",
                         f"{n2.get('client backend', 0)} / {n2.get('shoal worker', 0)}"])
        out += _table(["clients", "system", "tps", "latency ms", "shoal / postgres_fdw",
                       "n2 backends (client / shoal worker)"], rows, "rlrrrr")
        out += ["", "Ratios: " + "; ".join(
            f"{r['clients']} clients: shoal/postgres_fdw {r['shoal_vs_pgfdw']:.2f}x"
            + (f", shoal/local {r['shoal_vs_local']:.2f}, postgres_fdw/local {r['pgfdw_vs_local']:.2f}"
               if "shoal_vs_local" in r else "") for r in point["ratios"]) + f" (goal >= {RATIO_GOAL:.0f}x).",
                "", "pgbench commands (on n1):", "", "```"]
        out += [r["command"] for r in point["runs"] if "command" in r]
        out += ["```", "", _load_line(point.get("load")), ""]
    cpu_part = parts.get("cpu")
    if cpu_part and "error" not in cpu_part:
        out += [f"## CPU per point query (us, {cpu_part['queries']:,} queries, pgbench -t at "
                f"{cpu_part['clients']} clients)", ""]
        rows = []
        for s in cpu_part["systems"]:
            if "error" in s:
                rows.append([s["system"], "FAILED", s["error"][:80]] + [""] * (len(CPU_COLUMNS) + 1))
                continue
            us = s["cpu_us_per_query"]
            known = {f"{node} {kind}".strip() for (node, kind), _ in CPU_COLUMNS}
            other = sum(v for k, v in us.items() if k not in known)
            rows.append([s["system"], _fmt(s["tps"])]
                        + [_fmt(us.get(f"{node} {kind}".strip(), 0.0), 1) for (node, kind), _ in CPU_COLUMNS]
                        + [_fmt(other, 1), f"**{s['total_us_per_query']:.1f}**"])
        out += _table(["system", "tps", *[c for _, c in CPU_COLUMNS], "other", "total"], rows,
                      "lr" + "r" * (len(CPU_COLUMNS) + 2))
        tot = {s["system"]: s["total_us_per_query"] for s in cpu_part["systems"] if "error" not in s}
        if SHOAL in tot and PGFDW in tot:
            out += ["", f"postgres_fdw / shoal CPU per query: {tot[PGFDW] / tot[SHOAL]:.2f}x; for 2x "
                    f"postgres_fdw's throughput on a CPU-bound machine shoal needs <= "
                    f"{tot[PGFDW] / 2:.0f} us per query."]
        out += ["", "\"other\": the nodes' other processes (checkpointer, walwriter..., n1's idle workers). "
                "Exited processes (client backends, postgres_fdw's backends on n2) are counted from the "
                "postmaster's reaped-children time. pgbench commands:", "", "```"]
        out += [s["command"] for s in cpu_part["systems"] if "command" in s]
        out += ["```", "", _load_line(cpu_part.get("load")), ""]
    bulk = parts.get("bulk")
    if bulk and "error" not in bulk:
        out += [f"## Bulk read of {bulk['rows']:,} remote rows", "",
                f"`{BULK_QUERY.format(table='t')}` (the subquery stops postgres_fdw from pushing the "
                f"aggregate down), best of {meta['repeat']}:", ""]
        rows = []
        for e in bulk["systems"]:
            vs = by_ratio = ""
            if e["system"] == SHOAL:
                vs = f"**{bulk['ratios']['shoal_vs_pgfdw_10000']:.2f}x**"
                by_ratio = f"{bulk['ratios']['shoal_vs_pgfdw_default']:.2f}x"
            cpu_s = ", ".join(f"{k} {v:.2f}" for k, v in e["cpu_s"].items())
            rows.append([e["system"], f"{e['best_s']:.3f}", f"{e['median_s']:.3f}", _fmt(e["rows_per_s"]),
                         vs, by_ratio, f"{e['cpu_total_s']:.2f} ({cpu_s})"])
        out += _table(["system", "best s", "median s", "rows/s", "shoal / fetch 10000", "shoal / fetch 100",
                       "CPU s (by process)"], rows, "lrrrrrl")
        out += ["", _load_line(bulk.get("load")), ""]
    failed = {name: p["error"] for name, p in parts.items() if "error" in p}
    if failed:
        out += ["## Failed parts", ""] + [f"- {name}: {why}" for name, why in failed.items()] + [""]
    return "\n".join(out).rstrip() + "\n"


def write_results(meta: dict[str, Any], parts: dict[str, Any], md: str, where: Path) -> Path:
    """Write the JSON and the Markdown; fall back to /tmp when the results folder is not writable."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    payload = {"meta": meta, "parts": parts}
    for folder in (where, Path(tempfile.gettempdir()) / "shoal-bench-results"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"transport-{stamp}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
            (folder / f"transport-{stamp}.md").write_text(md)
            return folder / f"transport-{stamp}.json"
        except OSError as exc:
            progress(f"cannot write results to {folder}: {exc.strerror}")
    raise SystemExit("could not write the results anywhere")


# -- main ----------------------------------------------------------------------------------------

def _parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"parts are {', '.join(PARTS)}; not {', '.join(unknown) or text!r}")
    return [p for p in PARTS if p in parts]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/transport.py",
        description="shoal's transport on a throwaway 2-node cluster: multiplexer pings, remote point "
                    "queries and a bulk read, shoal_fdw against postgres_fdw.")
    parser.add_argument("--parts", type=_parts, default=list(PARTS),
                        help=f"comma-separated parts to run (default {','.join(PARTS)})")
    parser.add_argument("--seconds", type=int, default=10, help="duration of each pgbench run (default 10)")
    parser.add_argument("--clients", type=positive_ints, default=[1, 8, 64],
                        help="pgbench client counts of the point part (default 1,8,64)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of acc (default 100000)")
    parser.add_argument("--bulk-rows", type=int, default=1_000_000, help="rows of bulk (default 1000000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed bulk runs per system (default 5)")
    parser.add_argument("--windows", type=positive_ints, default=[16, 256, 1024],
                        help="pings in flight in the pipelined runs (default 16,256,1024)")
    parser.add_argument("--ping-seconds", type=float, default=2.0,
                        help="duration of each pipelined ping run (default 2)")
    parser.add_argument("--latency-count", type=int, default=2000,
                        help="pings one at a time per target for the latency (default 2000)")
    parser.add_argument("--cpu-clients", type=int, default=8,
                        help="pgbench clients of the cpu part (default 8)")
    parser.add_argument("--cpu-queries", type=int, default=10_000,
                        help="queries per system in the cpu part (default 10000)")
    parser.add_argument("--port", type=int, default=None,
                        help="PostgreSQL port of n1 (n2: +1; multiplexers: +1000; "
                             "default: free ones from 5800)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="the cluster's directory (must not exist; default: a new one in /tmp)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running at the end")
    parser.add_argument("--results-dir", type=Path, default=RESULTS,
                        help=f"where to write JSON and Markdown (default {RESULTS})")
    args = parser.parse_args(argv)
    if min(args.seconds, args.rows, args.bulk_rows, args.repeat, args.latency_count, args.cpu_clients,
           args.cpu_queries) < 1 or args.ping_seconds <= 0:
        parser.error("counts and durations must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 1 when a part failed (goals missed are reported, not failures)."""
    args = parse_args(argv)
    command = shlex.join([sys.executable, *sys.argv])
    port = free_port(args.port)
    user = osuser.service_user()
    workdir = Path(tempfile.mkdtemp(prefix="shoal-bench-", dir="/tmp"))
    osuser.chown_to(workdir, user)
    os.chmod(workdir, 0o755)
    cluster_dir = args.dir or workdir / "cluster"
    meta: dict[str, Any] = {
        "command": command,
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "git": git_revision(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "rows": args.rows, "bulk_rows": args.bulk_rows, "seconds": args.seconds, "repeat": args.repeat,
        "ping_goal": PING_GOAL, "ratio_goal": RATIO_GOAL, "cluster_dir": str(cluster_dir), "port": port,
    }
    parts: dict[str, Any] = {}
    cluster = Cluster(cluster_dir)
    bench: Bench | None = None
    try:
        progress(f"creating a 2-node cluster in {cluster_dir} on ports {port}, {port + 1} "
                 f"(servers run as OS user {user})")
        cluster.up(nodes=2, port=port, progress=lambda m: progress("  " + m))
        bench = Bench(args, cluster, workdir)
        bench.connect()
        meta["server_version"] = bench.sql("n1", "SHOW server_version")[0][0]
        meta["shoal_workers"] = bench.sql("n2", "SHOW shoal.workers")[0][0]
        set_up(bench, args.rows, args.bulk_rows, set(args.parts))
        time.sleep(1.0)  # let the channel between the multiplexers come up
        for name, run in (("ping", part_ping), ("point", part_point), ("cpu", part_cpu), ("bulk", part_bulk)):
            if name not in args.parts:
                continue
            progress(f"--- part {name} ---")
            load = cpu.MachineLoad(list(bench.postmasters.values()))
            load.start()
            try:
                parts[name] = run(bench)
            except Exception as exc:  # a part that breaks (e.g. mid-change code) leaves the others
                parts[name] = {"error": f"{type(exc).__name__}: {exc}"}
                progress(f"part {name} FAILED: {type(exc).__name__}: {exc}")
            parts[name]["load"] = load.stop()
            progress(_load_line(parts[name]["load"]))
    finally:
        if bench is not None:
            bench.close()
        if args.keep:
            progress(f"kept the cluster in {cluster_dir}: `shoal destroy --dir {cluster_dir}` removes it")
        else:
            if cluster.exists():
                progress(f"destroying the cluster in {cluster_dir}")
                cluster.destroy()
            shutil.rmtree(workdir, ignore_errors=True)

    md = markdown(meta, parts)
    path = write_results(meta, parts, md, args.results_dir)
    print()
    print(md)
    print(f"results: {path} (and .md)")
    return 1 if any("error" in p for p in parts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
