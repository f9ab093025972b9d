"""Where a node's multiplexer listens and which keys it holds, from the server's settings.

Shared by the daemon, the workers and the backends' client, so that all of them agree on the
local socket's path.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

MUX_PORT_OFFSET = 1000  # shoal.mux_port = 0: PostgreSQL's port + 1000
METRICS_PORT_OFFSET = 2000  # shoal.metrics_port = 0: PostgreSQL's port + 2000
MAX_IPC_PATH = 107


@dataclass(frozen=True)
class MuxConfig:
    node: str
    pg_port: int
    mux_port: int
    metrics_port: int
    ipc_path: str
    secret: bytes | None  # the cluster's secret key, None: no peer channel
    listen_host: str = "127.0.0.1"  # the peers' port listens where PostgreSQL listens
    deadlock_timeout_s: float = 2.0  # shoal.deadlock_timeout: how long a job may wait for a worker


def ipc_path_for(socket_dir: str, data_dir: str, pg_port: int) -> str:
    """The local socket: beside PostgreSQL's own, else in the data directory (both private to
    the server's OS user once the daemon has set the file's mode)."""
    for directory in (socket_dir, data_dir):
        path = os.path.join(directory, f".s.SHOAL.{pg_port}")
        if directory and len(path) <= MAX_IPC_PATH:
            return path
    raise ValueError(
        f"no directory for the multiplexer's socket: {socket_dir!r} and {data_dir!r} are too long"
    )


def load(setting) -> MuxConfig:
    """The configuration from a ``setting(name) -> str | None`` function (``_shoal_pg.setting``)."""
    pg_port = int(setting("port") or 5432)
    mux_port = int(setting("shoal.mux_port") or 0) or default_port(pg_port, MUX_PORT_OFFSET)
    metrics_port = int(setting("shoal.metrics_port") or 0) or default_port(pg_port, METRICS_PORT_OFFSET)
    socket_dir = (setting("unix_socket_directories") or "").split(",")[0].strip()
    secret = (setting("shoal.cluster_secret") or "").strip().encode() or None
    if secret is not None and len(secret) < 32:
        raise ValueError("shoal.cluster_secret must be at least 32 characters")
    return MuxConfig(
        node=setting("shoal.node_name") or "",
        pg_port=pg_port,
        mux_port=mux_port,
        metrics_port=metrics_port,
        ipc_path=ipc_path_for(socket_dir, setting("data_directory") or "", pg_port),
        secret=secret,
        listen_host=_listen_host(setting("listen_addresses") or "localhost"),
        deadlock_timeout_s=milliseconds(setting("shoal.deadlock_timeout"), 2000) / 1000,
    )


def milliseconds(value: str | None, default: int) -> int:
    """A time setting as SHOW prints it ("2s", "500ms", "1min") in milliseconds."""
    if not value:
        return default
    units = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
    number = value.rstrip("abcdefghijklmnopqrstuvwxyz")
    return int(float(number) * units.get(value[len(number):].strip() or "ms", 1))


def default_port(pg_port: int, offset: int) -> int:
    """PostgreSQL's port plus the offset, or minus it where the sum is not a port."""
    return pg_port + offset if pg_port + offset <= 65535 else pg_port - offset


def _listen_host(listen_addresses: str) -> str:
    """The first of PostgreSQL's listen_addresses, as bind() takes it ("" for all interfaces)."""
    first = listen_addresses.split(",")[0].strip()
    if first in ("*", "0.0.0.0", "::"):
        return ""
    return "127.0.0.1" if first in ("", "localhost") else first


def new_cluster_secret() -> str:
    """A fresh cluster key: every node of a cluster holds the same one (``shoal up`` writes it)."""
    return secrets.token_hex(32)
