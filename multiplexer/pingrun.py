"""Measuring a channel: a run of pings from this node's multiplexer to a peer's, and back.

A backend asks its multiplexer for a run (``Kind.PING_RUN``, behind ``shoal.ping()``): so many
pings, so many of them in flight at once.  The multiplexer sends them itself and matches the
PONGs, so the run measures what lies between the two multiplexers (the channel, both event loops,
the batching of whatever is pending for a peer into one frame) without the hop from a backend to
its multiplexer, which every ping sent by a backend would pay twice.  A window of 1 gives the
unloaded round trip; a wide one, the channel's capacity.

A run's pings carry RUN_CLIENT as their client: a backend's routing id is 8 bytes, so no answer
meant for a backend is mistaken for a run's.  Their request numbers say which run they belong to.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

from shoal.multiplexer.protocol import Kind

STALL_S = 10.0  # a run that hears nothing for this long fails (its peer drops pings)
MAX_PINGS = 10_000_000
MAX_WINDOW = 65_536
SAMPLES = 100_000  # latencies kept per run (every stride-th ping's), whatever its length
RUN_CLIENT = b"\x00"
RUN_SHIFT = 32  # a ping's request number is (run id << RUN_SHIFT) + its number in the run


@dataclass(slots=True)
class PingRun:
    ident: int
    client: bytes  # the backend that asked, and its request
    req: int
    node: str
    count: int
    window: int
    sent: int = 0
    received: int = 0
    started: float = 0.0
    last: float = 0.0
    in_flight: dict[int, float] = field(default_factory=dict)
    samples: array = field(default_factory=lambda: array("d"))
    stride: int = 1

    @classmethod
    def asked(cls, ident: int, client: bytes, req: int, node: str, payload: Any) -> PingRun:
        """The run a backend asked for; ValueError says what is wrong with the request."""
        if (type(payload) is not list or len(payload) != 2
                or any(type(value) is not int for value in payload)):
            raise ValueError("a ping run is asked for as [count, window]")
        count, window = payload
        if not 1 <= count <= MAX_PINGS:
            raise ValueError(f"the number of pings must be between 1 and {MAX_PINGS:,}")
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"the pings in flight must be between 1 and {MAX_WINDOW:,}")
        return cls(ident, client, req, node, count, window, stride=max(1, count // SAMPLES))

    def top_up(self, me: str, now: float) -> list[list[Any]]:
        """The pings to send now: as many as the window has room for."""
        n = min(self.window - len(self.in_flight), self.count - self.sent)
        if n <= 0:
            return []
        if not self.sent:
            self.started = now
        base = (self.ident << RUN_SHIFT) + self.sent
        self.sent += n
        in_flight = self.in_flight
        pings = []
        for req in range(base, base + n):
            in_flight[req] = now
            pings.append([Kind.PING, me, RUN_CLIENT, req, None, b""])
        return pings

    def answered(self, req: int, now: float) -> bool:
        """A PONG came back; True once the last one has."""
        sent = self.in_flight.pop(req, None)
        if sent is None:
            return False  # not one of ours (a peer that echoes a stranger's number)
        if self.received % self.stride == 0:
            self.samples.append((now - sent) * 1e6)
        self.received += 1
        self.last = now
        return self.received == self.count

    def stalled(self, now: float) -> bool:
        """Pings in flight, and no answer for STALL_S."""
        return bool(self.in_flight) and now - max(self.started, self.last) > STALL_S

    def result(self) -> list[float]:
        """[pings, seconds, p50_us, p99_us, max_us], as the answer to PING_RUN carries it."""
        ordered = sorted(self.samples)

        def at(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

        return [self.received, round(self.last - self.started, 6), at(0.50), at(0.99), round(ordered[-1], 1)]
