"""A throwaway plain PostgreSQL 15 server for the benchmarks: initdb, start and stop as the servers' OS user.

PostgreSQL refuses to run as root, so when the benchmarks run as root the server runs as the service user
of ``shoal.osuser`` (``postgres`` on Debian), exactly like ``shoal up`` does.  The data directory must be
somewhere that user can reach (``/tmp/...``, not ``/root/...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg

from shoal import osuser
from shoal.pgbin import pg_bin

HOST = "127.0.0.1"
SUPERUSER = "postgres"
DATABASE = "postgres"


def conf_value(value: str | int) -> str:
    """A postgresql.conf value: numbers as they are, anything else quoted."""
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class PgNode:
    """One PostgreSQL server in ``directory`` (data in ``directory/data``, log in ``directory/server.log``).

    ``port`` is its TCP port on 127.0.0.1, or None for a server reached only over its Unix socket (which
    lives in ``directory``)."""

    def __init__(self, name: str, directory: Path, port: int | None, settings: Mapping[str, str | int],
                 user: str | None = None) -> None:
        self.name = name
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "server.log"
        self.port = port
        self.settings = dict(settings)
        self.user = user or osuser.service_user()
        self.bindir = pg_bin()
        self.running = False

    @property
    def socket_port(self) -> int:
        return self.port if self.port is not None else 5432

    @property
    def conninfo(self) -> str:
        """libpq connection string (TCP when the node has a port, else its Unix socket)."""
        host = HOST if self.port is not None else str(self.directory)
        return f"host={host} port={self.socket_port} dbname={DATABASE} user={SUPERUSER}"

    def _run(self, argv: list[str], what: str) -> None:
        result = osuser.run_as(self.user, argv, check=False)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            hint = f" (see {self.log})" if what == "pg_ctl start" else ""
            raise RuntimeError(f"{what} failed for {self.name}{hint}: " + " | ".join(tail))

    def init(self) -> None:
        """initdb (trust authentication, superuser ``postgres``) and write the settings."""
        osuser.make_dir_for(self.directory, self.user)
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                   "-E", "UTF8", "--locale=C", "--no-instructions"], "initdb")
        settings: dict[str, str | int] = {
            "listen_addresses": HOST if self.port is not None else "",
            "port": self.socket_port,
            "unix_socket_directories": str(self.directory),
            "logging_collector": "off",
            "log_line_prefix": "%m [%p] %q%u@%d ",
            **self.settings,
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# written by bench/pgnode.py\n")
            for name, value in settings.items():
                conf.write(f"{name} = {conf_value(value)}\n")

    def start(self) -> None:
        self._run([str(self.bindir / "pg_ctl"), "start", "-w", "-t", "120", "-D", str(self.data),
                   "-l", str(self.log)], "pg_ctl start")
        self.running = True

    def stop(self) -> None:
        """Stop the server if we started it (fast shutdown); never raises."""
        if self.running:
            osuser.run_as(self.user, [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data),
                                      "-m", "fast", "-w", "-t", "120"], check=False)
            self.running = False

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """An autocommit superuser connection."""
        kwargs.setdefault("autocommit", True)
        return psycopg.connect(self.conninfo, **kwargs)
