"""A multiplexer's ping run (multiplexer/pingrun.py) without sockets: what a backend may ask,
the window, the matching of answers and the figures it reports."""

from __future__ import annotations

import pytest

from shoal.multiplexer.pingrun import MAX_PINGS, MAX_WINDOW, RUN_CLIENT, RUN_SHIFT, SAMPLES, STALL_S, PingRun
from shoal.multiplexer.protocol import Kind


def run(count: int, window: int, ident: int = 3) -> PingRun:
    return PingRun.asked(ident, b"backend1", 17, "n2", [count, window])


@pytest.mark.parametrize("payload", [None, b"", [], [1], [1, 2, 3], [1, "2"], [1.0, 2], [True, 2]])
def test_a_run_is_asked_for_as_count_and_window(payload) -> None:
    with pytest.raises(ValueError, match=r"\[count, window\]"):
        PingRun.asked(1, b"c", 1, "n2", payload)


@pytest.mark.parametrize(("count", "window", "error"), [
    (0, 1, "number of pings"), (MAX_PINGS + 1, 1, "number of pings"),
    (1, 0, "in flight"), (1, MAX_WINDOW + 1, "in flight"),
])
def test_bounds(count: int, window: int, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        run(count, window)


def test_the_window_bounds_what_is_in_flight() -> None:
    r = run(10, 4)
    pings = r.top_up("n1", 1.0)
    assert len(pings) == 4 and r.top_up("n1", 1.0) == []
    assert all(p[:3] == [Kind.PING, "n1", RUN_CLIENT] and p[4] is None for p in pings)
    reqs = [p[3] for p in pings]
    assert len(set(reqs)) == 4 and {req >> RUN_SHIFT for req in reqs} == {3}
    assert r.answered(reqs[0], 1.5) is False
    assert len(r.top_up("n1", 1.5)) == 1  # one answered, one more goes


def test_answers_complete_the_run_and_strangers_do_not_count() -> None:
    r = run(3, 8)
    reqs = [p[3] for p in r.top_up("n1", 10.0)]
    assert len(reqs) == 3 and r.top_up("n1", 10.0) == []  # never more than asked for
    assert r.answered((4 << RUN_SHIFT) + 1, 10.1) is False  # another run's number
    assert r.answered(reqs[1], 10.000_100) is False
    assert r.answered(reqs[1], 10.000_200) is False  # the same answer twice counts once
    assert r.answered(reqs[0], 10.000_300) is False
    assert r.answered(reqs[2], 10.000_500) is True
    pings, seconds, p50, p99, longest = r.result()
    assert pings == 3 and seconds == pytest.approx(0.0005)
    assert (p50, p99, longest) == pytest.approx((300.0, 500.0, 500.0), abs=0.2)


def test_long_runs_keep_a_bounded_sample() -> None:
    count = SAMPLES * 3
    r = run(count, MAX_WINDOW)
    now = 0.0
    while r.received < count:
        for ping in r.top_up("n1", now):
            r.answered(ping[3], now + 0.001)
        now += 0.01
    assert len(r.samples) == SAMPLES
    assert r.result()[0] == count and r.result()[2] == pytest.approx(1000.0, abs=0.1)


def test_a_run_that_hears_nothing_is_stalled() -> None:
    r = run(5, 2)
    assert not r.stalled(100.0)  # nothing sent yet
    first, _ = [p[3] for p in r.top_up("n1", 100.0)]
    assert not r.stalled(100.0 + STALL_S - 1)
    assert r.stalled(100.0 + STALL_S + 1)
    r.answered(first, 105.0)
    assert not r.stalled(100.0 + STALL_S + 1)  # it heard at 105
    assert r.stalled(105.0 + STALL_S + 1)
