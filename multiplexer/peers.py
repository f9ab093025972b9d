"""The other nodes as a multiplexer sees them: where their multiplexers listen, and the one
channel to each.

Exactly one TCP connection joins two nodes: the node whose name sorts first connects, the other
accepts (peerlink.py).  Both directions of traffic share it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from shoal.multiplexer.config import MUX_PORT_OFFSET, default_port
from shoal.multiplexer.stats import PeerStats

HEARTBEAT_S = 1.0
DOWN_AFTER_S = 3.5

NODES_SQL = (
    "SELECT name, conninfo, coalesce(mux_port::text, '') FROM shoal.node ORDER BY name"
)


@dataclass(frozen=True)
class NodeAddress:
    name: str
    host: str
    mux_port: int

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.mux_port}"


def node_address(name: str, conninfo: str, mux_port: str | None) -> NodeAddress:
    """A node's multiplexer address from its catalog row (port: given, else its PostgreSQL port
    + 1000, the default of shoal.mux_port)."""
    params = conninfo_to_dict(conninfo)
    host = params.get("hostaddr") or params.get("host") or "127.0.0.1"
    if host.startswith("/"):  # a Unix socket directory: the node is on this machine
        host = "127.0.0.1"
    host = host.split(",")[0]
    pg_port = int(str(params.get("port") or 5432).split(",")[0])
    port = int(mux_port) if mux_port else default_port(pg_port, MUX_PORT_OFFSET)
    return NodeAddress(name, host, port)


@dataclass
class Channel:
    """The channel to one peer and what waits to go through it."""

    address: NodeAddress
    link: Any = None  # the PeerLink: ours if we called, theirs if they did
    next_attempt: float = 0.0
    state: str = "connecting"
    last_heard: float = 0.0
    out: list = field(default_factory=list)
    stats: PeerStats = field(default_factory=PeerStats)
    since: float = field(default_factory=time.monotonic)

    @property
    def name(self) -> str:
        return self.address.name

    def heard(self, now: float) -> bool:
        """Note traffic from the peer; True when the channel just came up."""
        self.last_heard = now
        if self.state != "up":
            self.state = "up"
            return True
        return False

    def silent_too_long(self, now: float) -> bool:
        return self.state == "up" and now - self.last_heard > DOWN_AFTER_S

    def accepts_requests(self, now: float) -> bool:
        # Until the first heartbeat, give a fresh channel the benefit of the doubt for a while.
        return self.state == "up" or (self.state == "connecting" and now - self.since < DOWN_AFTER_S)
