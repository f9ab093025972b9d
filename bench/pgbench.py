"""Running pgbench with a custom script and reading its report, for the benchmarks."""

from __future__ import annotations

import re
import resource
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class PgbenchError(RuntimeError):
    """pgbench failed (a query raised, the server went away...)."""


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
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd="/")
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = shlex.join(argv)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        errors = [ln for ln in lines if "error" in ln.lower() or "abort" in ln.lower()]
        raise PgbenchError(f"{command} exited with {result.returncode}: "
                           + " | ".join((errors or lines)[:3]))
    out = result.stdout
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
    )
