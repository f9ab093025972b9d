"""The `shoal` command line as a user meets it: a real process, its stdout, stderr and exit code.

Ports 26100-26199 belong to this file.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

CONNINFO = re.compile(r"^host=127\.0\.0\.1 port=(\d+) dbname=postgres user=postgres$")


def shoal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m shoal ARGS` with the interpreter running the tests (the installed shoal)."""
    return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture
def cluster_dir() -> Iterator[Path]:
    """A short, not yet existing cluster directory; its cluster is destroyed afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="shoal-c-"))
    directory = parent / "c"
    try:
        yield directory
    finally:
        try:
            shoal("destroy", "--dir", str(directory))
        finally:
            shutil.rmtree(parent, ignore_errors=True)


def _assert_one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("shoal: error: ") and text in lines[0], result.stderr
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in result.stderr


def test_help() -> None:
    result = shoal("--help")
    assert result.returncode == 0
    for command in ("up", "down", "status", "destroy"):
        assert command in result.stdout
    up = shoal("up", "--help")
    assert up.returncode == 0
    for option in ("--nodes", "--dir", "--port"):
        assert option in up.stdout


def test_console_script_and_version() -> None:
    script = Path(sys.executable).with_name("shoal")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert re.fullmatch(r"shoal \d+\.\d+\.\d+\n", result.stdout)


def test_up_status_down_up_destroy(cluster_dir: Path) -> None:
    d = str(cluster_dir)

    up = shoal("up", "--nodes", "2", "--dir", d, "--port", "26101")
    assert up.returncode == 0, up.stderr
    lines = up.stdout.splitlines()
    assert [CONNINFO.match(line).group(1) for line in lines] == ["26101", "26102"]  # type: ignore[union-attr]
    assert "shoal: initdb n1" in up.stderr and "shoal: starting n2 on port 26102" in up.stderr
    for line in lines:
        with psycopg.connect(line) as conn:
            assert conn.execute("SHOW shared_preload_libraries").fetchone() == ("shoal",)

    again = shoal("up", "--dir", d)
    assert again.returncode == 0, again.stderr
    assert again.stdout == up.stdout  # idempotent: the same strings, nothing started
    assert "starting" not in again.stderr and "initdb" not in again.stderr

    status = shoal("status", "--dir", d)
    assert status.returncode == 0, status.stderr
    assert f"cluster {cluster_dir}: 2 of 2 nodes running" in status.stdout
    assert re.search(r"^\s+n1\s+up\s+26101\s+\d+\s+2\s+host=", status.stdout, re.M), status.stdout
    assert re.search(r"^\s+n2\s+up\s+26102\s+\d+\s+2\s+host=", status.stdout, re.M), status.stdout

    down = shoal("down", "--dir", d)
    assert down.returncode == 0, down.stderr
    assert "stopping n1" in down.stderr and "stopping n2" in down.stderr
    status = shoal("status", "--dir", d)
    assert re.search(r"^\s+n2\s+down\s+26102\s+-", status.stdout, re.M), status.stdout

    restarted = shoal("up", "--dir", d)
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout == up.stdout
    assert "starting n1" in restarted.stderr and "initdb" not in restarted.stderr

    destroy = shoal("destroy", "--dir", d)
    assert destroy.returncode == 0, destroy.stderr
    assert not cluster_dir.exists()


def test_port_in_use_is_a_one_line_error(cluster_dir: Path) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 26111))
        sock.listen()
        result = shoal("up", "--nodes", "2", "--dir", str(cluster_dir), "--port", "26111")
    _assert_one_line_error(result, "port 26111 on 127.0.0.1 (node n1) is already in use")
    assert "--port" in result.stderr.splitlines()[1]
    assert not cluster_dir.exists()


def test_commands_on_a_missing_cluster(cluster_dir: Path) -> None:
    _assert_one_line_error(shoal("status", "--dir", str(cluster_dir)), "no shoal cluster in")
    _assert_one_line_error(shoal("down", "--dir", str(cluster_dir)), "no shoal cluster in")
    destroy = shoal("destroy", "--dir", str(cluster_dir))
    assert destroy.returncode == 0
    assert "nothing to destroy" in destroy.stderr


def test_bad_arguments(cluster_dir: Path) -> None:
    _assert_one_line_error(shoal("up", "--dir", str(cluster_dir), "--nodes", "0"), "--nodes")
    _assert_one_line_error(shoal("up", "--dir", str(cluster_dir), "--port", "80"), "out of range")
    usage = shoal("up", "--nodes", "many")
    assert usage.returncode == 2 and "invalid int value" in usage.stderr


def test_debug_shows_the_traceback(cluster_dir: Path) -> None:
    result = shoal("status", "--dir", str(cluster_dir), env={"SHOAL_DEBUG": "1"})
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "shoal: error: no shoal cluster in" in result.stderr
