"""bench/transport.py (multiplexer pings, remote point queries, bulk reads: shoal_fdw against
postgres_fdw on its own 2-node cluster) run from the common harness, on its fixed ports.

Part of it runs as the servers' OS user, which may not be able to read the clone (under /root, say), so the
benchmark runs from a copy of bench/ in the run's work directory.  Its JSON results come back into the
run's results.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report
from bench.systems import PORTS
from shoal import osuser

Progress = Callable[[str], None]
BENCH = Path(__file__).resolve().parent
QUICK_ARGS = ["--seconds", "5", "--rows", "20000", "--bulk-rows", "200000", "--repeat", "2",
              "--windows", "16,256,1024", "--ping-seconds", "1", "--latency-count", "500",
              "--cpu-queries", "2000"]


def _stage(workdir: Path) -> Path:
    stage = workdir / "transport-stage"
    shutil.copytree(BENCH, stage / "bench", ignore=shutil.ignore_patterns("__pycache__", "results", "*.pyc"))
    for path in [stage, *stage.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    osuser.chown_to(stage, osuser.service_user())
    return stage


def run(workdir: Path, results_dir: Path, quick: bool, seconds: int | None, clients: list[int],
        progress: Progress) -> dict[str, Any]:
    """Run bench/transport.py; returns its JSON (plus the command), or {"error": ...}."""
    stage = _stage(workdir)
    argv = [sys.executable, str(stage / "bench" / "transport.py"), "--port", str(PORTS["transport"]),
            "--results-dir", str(results_dir), "--clients", ",".join(map(str, clients))]
    if quick:
        argv += QUICK_ARGS
    if seconds is not None:
        argv += ["--seconds", str(seconds)]
    progress("transport: " + " ".join(argv[1:]))
    # the staged copy is no git checkout: it reports the revision measured from here
    env = {**os.environ, report.REVISION_ENV: report.git_revision() or ""}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/",
                            stdin=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    where = None
    for line in proc.stdout:
        line = line.rstrip("\n")
        if line.startswith("["):  # transport's own progress lines
            progress("transport: " + line.split("] ", 1)[-1])
        match = re.match(r"results: (\S+\.json)", line)
        if match:
            where = Path(match.group(1))
    code = proc.wait()
    if where is None or not where.is_file():
        return {"error": f"bench/transport.py exited with {code} and wrote no results"}
    data = json.loads(where.read_text())
    out = {"command": " ".join(["python", "bench/transport.py", *argv[2:]]), "exit_code": code,
           "json": str(where), "markdown": str(where.with_suffix(".md")), "parts": data.get("parts", {}),
           "meta": data.get("meta", {})}
    return out
