"""What every benchmark prints about itself: progress lines, the machine and the code it measured."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_t0 = time.monotonic()


def progress(message: str, prefix: str = "", stream=sys.stdout) -> None:
    """One progress line, with the time since the benchmark started."""
    print(f"[{prefix}{time.monotonic() - _t0:7.1f}s] {message}", file=stream, flush=True)


def cpu_model() -> str:
    """The CPU's model name (the core count is os.cpu_count())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


REVISION_ENV = "SHOAL_BENCH_REVISION"  # set for a staged copy of bench/, outside the checkout


def git_revision() -> str | None:
    """The commit measured, marked when the working tree differs from it."""
    if os.environ.get(REVISION_ENV):
        return os.environ[REVISION_ENV]
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True,
                           text=True).stdout.strip()
    return out.stdout.strip() + (" (uncommitted changes)" if dirty else "")


def positive_ints(text: str) -> list[int]:
    """An argparse type: a comma-separated list of positive integers ("1,8,64")."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values
