"""The extension's SQL functions that are written in Python (see extension/sqlfunc.c).

Each function here is reached from the SQL function of the same name; arguments arrive as Python
values (relations as OIDs, JSON as text).
"""

from __future__ import annotations

import json

from shoal.sharding import distribute, everywhere, extend, move, replicate


def create_distributed_table(relation: int, column: str, partitions: int | None,
                             colocate_with: int | None) -> None:
    with everywhere.internal():
        distribute.create_distributed_table(relation, column, partitions, colocate_with)


def create_global_table(relation: int) -> None:
    with everywhere.internal():
        distribute.create_global_table(relation)


def sync_node(name: str) -> int:
    with everywhere.internal():
        return extend.sync_node(name)


def move_partition(partition: int, node: str) -> int:
    with everywhere.internal():
        return move.move_partition(partition, node)


def _ship_changes(relation: int, op: str, new_rows: str | None, old_rows: str | None) -> None:
    with everywhere.internal():
        replicate.ship(relation, op, new_rows, old_rows)


def _sync_privileges(relation: int) -> None:
    with everywhere.internal():
        distribute.sync_privileges(relation)


def _in_doubt_json(settle: bool) -> str:
    from shoal.transactions import indoubt

    return json.dumps(indoubt.across_cluster(bool(settle)))


def _ping_json(node: str, pings: int, in_flight: int) -> str:
    from shoal.multiplexer import client

    run = client.connect().ping_run(node, pings, in_flight)
    rate = run["pings"] / run["seconds"] if run["seconds"] > 0 else None
    return json.dumps({"node": node, **run, "pings_per_s": rate})
