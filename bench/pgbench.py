"""Running pgbench (a custom script or a built-in one) and reading its report and per-transaction logs."""

from __future__ import annotations

import math
import os
import re
import resource
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class PgbenchError(RuntimeError):
    """pgbench failed (a query raised, the server went away...)."""


class PgbenchHung(PgbenchError):
    """pgbench did not finish in time (and was killed): some transaction never ended."""


# A statement that runs this long in a benchmark is stuck (a lock wait nobody will end, say): it is
# cancelled, its client aborts and the run is reported as failed instead of hanging.
STATEMENT_TIMEOUT_S = 30


@dataclass
class PgbenchRun:
    clients: int
    threads: int
    command: str
    tps: float  # without initial connection time
    latency_ms: float  # average
    transactions: int  # processed
    failed: int
    wall_s: float
    cpu_s: float  # pgbench's own user + system time
    retried: int = 0  # transactions that needed more than one try (--max-tries)
    latency_p50_ms: float | None = None  # from the per-transaction log, when there is one
    latency_p99_ms: float | None = None
    logged: int = 0  # transactions in the per-transaction log


def point_query_script(path: Path, table: str, rows: int) -> Path:
    """The point-read script: one random key per transaction."""
    path.write_text(f"\\set aid random(1, {rows})\nSELECT abalance FROM {table} WHERE aid = :aid;\n")
    path.chmod(0o644)
    return path


def _number(pattern: str, text: str, kind: type = float) -> float:
    match = re.search(pattern, text)
    if match is None:
        raise PgbenchError(f"pgbench's report has no {pattern!r}:\n{text}")
    return kind(match.group(1))


def run(pgbench: Path, port: int, script: Path, clients: int, *, seconds: int | None = None,
        transactions: int | None = None, host: str = "127.0.0.1", user: str = "postgres",
        dbname: str = "postgres") -> PgbenchRun:
    """pgbench -M prepared with `script` at `clients` clients (threads: min(clients, 2)), for
    `seconds` (-T) or `transactions` per client (-t)."""
    threads = min(clients, 2)
    argv = [str(pgbench), "-h", host, "-p", str(port), "-U", user, "-n", "-M", "prepared",
            "-f", str(script), "-c", str(clients), "-j", str(threads)]
    if seconds is not None:
        argv += ["-T", str(seconds)]
    elif transactions is not None:
        argv += ["-t", str(transactions)]
    argv.append(dbname)
    return _execute(argv, clients, threads)


def run_builtin(pgbench: Path, port: int, builtin: str, protocol: str, clients: int, seconds: int, *,
                log_prefix: Path | None = None, max_tries: int = 1, host: str = "127.0.0.1",
                user: str = "postgres", dbname: str = "postgres", options: str | None = None) -> PgbenchRun:
    """pgbench -b `builtin` (select-only, tpcb-like...) -M `protocol` at `clients` clients (threads:
    min(clients, 2)) for `seconds`; with `log_prefix`, every transaction is logged (-l) there and the run
    carries latency percentiles from those logs.  `max_tries` > 1 retries serialization failures and
    deadlocks (pgbench 15), which the sharded systems' remote REPEATABLE READ transactions can meet.
    `options` are server settings for the sessions ("-c name=value").
    Statements are cancelled after STATEMENT_TIMEOUT_S, and pgbench is killed (PgbenchHung) when it has not
    finished STATEMENT_TIMEOUT_S + 60 s after its end."""
    threads = min(clients, 2)
    argv = [str(pgbench), "-h", host, "-p", str(port), "-U", user, "-n", "-b", builtin, "-M", protocol,
            "-c", str(clients), "-j", str(threads), "-T", str(seconds), f"--max-tries={max_tries}"]
    if log_prefix is not None:
        for old in log_prefix.parent.glob(log_prefix.name + ".*"):
            old.unlink()
        argv += ["-l", f"--log-prefix={log_prefix}"]
    # settings for the sessions (-c name=value ...) ride in the connection string
    argv.append(f"dbname={dbname} options='{options}'" if options else dbname)
    result = _execute(argv, clients, threads, timeout=seconds + STATEMENT_TIMEOUT_S + 60)
    if log_prefix is not None:
        latencies = transaction_latencies_us(log_prefix)
        result.latency_p50_ms = percentile(latencies, 50) / 1000
        result.latency_p99_ms = percentile(latencies, 99) / 1000
        result.logged = len(latencies)
        for old in log_prefix.parent.glob(log_prefix.name + ".*"):
            old.unlink()
    return result


def transaction_latencies_us(log_prefix: Path) -> list[int]:
    """The latencies (µs) of the transactions in pgbench's per-transaction logs (-l): the third field of
    each line ("client_id transaction_no time script_no time_epoch time_us ..."); failed transactions
    ("failed" there) are left out."""
    latencies: list[int] = []
    for path in log_prefix.parent.glob(log_prefix.name + ".*"):
        with path.open() as f:
            for line in f:
                fields = line.split(maxsplit=3)
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]))
    return latencies


def percentile(values: list[int], pct: float) -> float:
    """The `pct` percentile (nearest rank) of `values`; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


def _execute(argv: list[str], clients: int, threads: int, timeout: float | None = None) -> PgbenchRun:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    command = shlex.join(argv)
    env = dict(os.environ)
    if timeout is not None:
        env["PGOPTIONS"] = f"-c statement_timeout={STATEMENT_TIMEOUT_S}s"
    try:
        result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd="/",
                                env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise PgbenchHung(f"hung: pgbench had not finished {timeout:.0f} s after it started and was killed "
                          f"(command: {command})") from exc
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        errors = [ln for ln in lines if "error" in ln.lower() or "abort" in ln.lower()]
        raise PgbenchError(f"pgbench exited with {result.returncode}: " + " | ".join((errors or lines)[:3])
                           + f" (command: {command})")
    out = result.stdout
    retried = re.search(r"number of transactions retried: (\d+)", out)
    return PgbenchRun(
        clients=clients,
        threads=threads,
        command=command,
        tps=_number(r"tps = ([\d.]+) \(without initial connection time\)", out),
        latency_ms=_number(r"latency average = ([\d.]+) ms", out),
        transactions=int(_number(r"number of transactions actually processed: (\d+)", out, int)),
        failed=int(_number(r"number of failed transactions: (\d+)", out, int)) if "failed" in out else 0,
        wall_s=wall,
        cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        retried=int(retried.group(1)) if retried else 0,
    )
