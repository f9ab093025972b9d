"""pgbench on every system of a run: select-only (-S) and TPC-B-like, prepared and simple protocol, at each
client count; throughput, average / p50 / p99 latency and the backends on the non-coordinator node.

Data: ``pgbench -i -s SCALE`` on the first node.  On the sharded systems the four pgbench tables are then
sharded with the system's own ``distribute``: pgbench_accounts by aid, pgbench_branches by bid,
pgbench_tellers by tid and pgbench_history (which has no key) by aid, all into the same number of
partitions.  pgbench always connects to the first node.  The systems take turns for every (workload,
protocol, clients) cell, in a rotating order, so that a burst of load from other users of this machine
does not always hit the same system.  p50/p99 come from pgbench's per-transaction log (-l).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import pgbench as pgb
from bench.backends import BackendSampler, summary
from bench.systems import System
from shoal.pgbin import pg_bin

Progress = Callable[[str], None]

WORKLOADS = ("select-only", "tpcb-like")
PROTOCOLS = ("prepared", "simple")
TABLES = (("pgbench_accounts", "aid"), ("pgbench_branches", "bid"), ("pgbench_tellers", "tid"),
          ("pgbench_history", "aid"))
# The sharded systems run each transaction's remote part in REPEATABLE READ (postgres_fdw does; so may
# shoal): concurrent TPC-B updates of one branch row then fail with serialization errors, which pgbench 15
# retries (and counts) instead of aborting the client.
MAX_TRIES = 10
# What the guarantees cost: shoal's TPC-B again without the commit gates of consistent snapshots,
# and again without two-phase commit either (each node then commits in one phase, one after the
# other, as with postgres_fdw).
VARIANTS = {("shoal", "tpcb-like"): [
    ("shoal (no cut)", "-c shoal.consistent_snapshots=off"),
    ("shoal (1PC)", "-c shoal.consistent_snapshots=off -c shoal.two_phase_commit=off"),
]}


@dataclass
class Options:
    scale: int
    clients: list[int]
    seconds: int
    partitions: int
    warmup: int


def load(system: System, opts: Options, progress: Progress) -> dict[str, Any]:
    """pgbench -i on the first node, then shard the tables; returns what was loaded and how long it took."""
    pgbench = pg_bin() / "pgbench"
    node = system.coordinator
    start = time.monotonic()
    steps = "dtGvp" if not system.sharded else "dtGp"
    argv = [str(pgbench), "-i", "-s", str(opts.scale), "-I", steps, "-h", "127.0.0.1", "-p", str(node.port),
            "-U", "postgres", "postgres"]
    progress(f"{system.name}: pgbench -i -s {opts.scale} -I {steps} on {node.name}")
    _check_call(argv)
    if system.sharded:
        for table, column in TABLES:
            progress(f"{system.name}: distributing {table} by {column} into {opts.partitions} partitions")
            system.distribute(table, column, opts.partitions)
        for i in range(len(system.nodes)):
            with system.connect(i) as conn:
                conn.execute("VACUUM ANALYZE")
    with system.connect() as conn:
        count, total = conn.execute("SELECT count(*), sum(abalance) FROM pgbench_accounts").fetchone()
    if count != opts.scale * 100_000:
        raise RuntimeError(f"{system.name}: pgbench_accounts has {count} rows, not {opts.scale * 100_000}")
    seconds = round(time.monotonic() - start, 1)
    progress(f"{system.name}: pgbench data ready in {seconds}s ({count:,} accounts)")
    return {"seconds": seconds, "accounts": count, "sum_abalance": int(total or 0)}


def _check_call(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd="/")
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{argv[0]} {' '.join(argv[1:4])}... failed: " + " | ".join(tail))


def _one(system: System, workload: str, protocol: str, clients: int, seconds: int,
         log_prefix: Path, variant: tuple[str, str] | None = None) -> dict[str, Any]:
    """One pgbench run; ``variant``: (name, session settings) of a variant of the system."""
    pgbench = pg_bin() / "pgbench"
    others = {n.name: n.conninfo for n in system.nodes[1:]}
    name, options = variant or (system.name, None)
    entry: dict[str, Any] = {"system": name, "workload": workload, "protocol": protocol,
                             "clients": clients}
    if options:
        entry["options"] = options
    try:
        if others:
            with BackendSampler(others) as sampler:
                run = pgb.run_builtin(pgbench, system.coordinator.port, workload, protocol, clients, seconds,
                                      log_prefix=log_prefix, max_tries=MAX_TRIES, options=options)
            entry["peer_backends"] = {node: summary(most) for node, most in sampler.most.items()}
            entry["peer_backend_types"] = sampler.most
        else:
            run = pgb.run_builtin(pgbench, system.coordinator.port, workload, protocol, clients, seconds,
                                  log_prefix=log_prefix, max_tries=MAX_TRIES, options=options)
        entry.update(vars(run))
    except pgb.PgbenchError as exc:
        entry["error"] = str(exc)
        entry["sessions_terminated"] = system.terminate_sessions()  # the next run starts clean
    return entry


def describe_run(entry: dict[str, Any]) -> str:
    head = (f"{entry['workload']:<11} {entry['protocol']:<8} {entry['clients']:>3} clients "
            f"{entry['system']:<12}")
    if "error" in entry:
        return f"{head} FAILED: {entry['error'][:200]}"
    peers = entry.get("peer_backends", {})
    peer = "; ".join(f"{n}: {b['client_backends']} client backends + {b['shoal_workers']} shoal workers"
                     for n, b in peers.items())
    extra = f", {entry['failed']} failed" if entry.get("failed") else ""
    extra += f", {entry['retried']} retried" if entry.get("retried") else ""
    return (f"{head} {entry['tps']:>9,.0f} tps  avg {entry['latency_ms']:.3f} ms  "
            f"p99 {entry['latency_p99_ms'] or 0:.3f} ms{extra}" + (f"  [{peer}]" if peer else ""))


def run(systems: list[System], opts: Options, workdir: Path, progress: Progress) -> dict[str, Any]:
    """Load every system, then run every cell on every system; returns the results (JSON-ready)."""
    loaded: dict[str, Any] = {}
    ready: list[System] = []
    for system in systems:
        try:
            loaded[system.name] = load(system, opts, progress)
            ready.append(system)
        except Exception as exc:  # a system that cannot load is reported, the others still run
            loaded[system.name] = {"error": f"{type(exc).__name__}: {exc}"}
            progress(f"{system.name}: pgbench load FAILED: {type(exc).__name__}: {exc}")
    log_prefix = workdir / "pgbench_log"
    if opts.warmup > 0:
        for system in ready:
            for workload in WORKLOADS:
                progress(f"{system.name}: warm-up {workload} {opts.warmup}s")
                entry = _one(system, workload, "prepared", 8, opts.warmup, log_prefix)
                if "error" in entry:
                    progress(f"{system.name}: warm-up FAILED: {entry['error'][:200]}")
    runs: list[dict[str, Any]] = []
    # After a failed run, a system's later runs of the same workload are skipped: what broke it (a hung
    # transaction holding locks, say) usually outlives the run and would make each of them wait for the
    # timeouts again.
    broken: dict[tuple[str, str], str] = {}
    cell = 0
    for workload in WORKLOADS:
        for protocol in PROTOCOLS:
            for clients in opts.clients:
                order = ready[cell % len(ready):] + ready[:cell % len(ready)] if ready else []
                cell += 1
                for system in order:
                    if (system.name, workload) in broken:
                        entry = {"system": system.name, "workload": workload, "protocol": protocol,
                                 "clients": clients, "skipped": True,
                                 "error": f"skipped: {broken[system.name, workload]}"}
                    else:
                        entry = _one(system, workload, protocol, clients, opts.seconds, log_prefix)
                        if "error" in entry:
                            broken[system.name, workload] = (f"an earlier {workload} run failed "
                                                             f"(-M {protocol}, {clients} clients)")
                    runs.append(entry)
                    progress(describe_run(entry))
                    if "error" in entry:
                        continue
                    for variant in VARIANTS.get((system.name, workload), []):
                        entry = _one(system, workload, protocol, clients, opts.seconds, log_prefix, variant)
                        runs.append(entry)
                        progress(describe_run(entry))
    return {"options": vars(opts), "max_tries": MAX_TRIES, "load": loaded, "runs": runs}
