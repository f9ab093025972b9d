"""The parts of shoal.transactions.indoubt that need no server: gids and their parsing.

Recovery itself (asking coordinators, settling, purging) runs on real clusters in
test_transactions.py and test_bank.py.
"""

from __future__ import annotations

import pytest

from shoal.multiplexer.config import milliseconds
from shoal.transactions import indoubt


def test_a_gid_names_coordinator_and_transaction() -> None:
    name = indoubt.gid("n1", 12345)
    assert name.startswith("shoal:n1:12345:")
    assert indoubt.parse_gid(name) == ("n1", 12345)
    assert indoubt.gid("n1", 12345) != name  # a nonce: a crash may hand the same xid out again


@pytest.mark.parametrize("name", [
    "pgbench_1", "shoal:n1:12345", "shoal::12:ab", "shoal:n1:x:ab", "other:n1:1:ab", "shoal:n1:1:ab:cd",
])
def test_other_prepared_transactions_are_not_shoal_s(name: str) -> None:
    assert indoubt.parse_gid(name) is None


def test_rows_carry_node_and_decision() -> None:
    entry = indoubt.InDoubt("shoal:n1:7:ab", "n1", 7, "2026-11-21 10:00:00+00", 12.0,
                            decision=indoubt.COMMITTED, action="committed")
    assert indoubt.rows([entry], "n2") == [
        ("n2", "shoal:n1:7:ab", "n1", "2026-11-21 10:00:00+00", "committed", "committed")]


@pytest.mark.parametrize(("shown", "ms"), [
    ("2s", 2000), ("500ms", 500), ("1min", 60_000), ("1500", 1500), ("", 7), (None, 7),
])
def test_time_settings_as_show_prints_them(shown: str | None, ms: int) -> None:
    assert milliseconds(shown, 7) == ms
