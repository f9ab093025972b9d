"""Unique constraints and unique indexes added to a distributed table after it was distributed.

PostgreSQL allows no unique index on a partitioned table with foreign partitions, so uniqueness is
enforced per partition, which is exact when the key includes the distribution column.  Keys
declared with the table are made on each partition when it is created (shoal.sharding.distribute);
one added later is made on every partition by the node holding it (shoal._add_unique, see
extension/uniques.c, which checks the key and runs the statement's own parse tree against the
partition), in the statement's transaction, while PostgreSQL skips it on the parent.  Then every
node's backends forget the keys their handlers have seen on the partitions.
"""

from __future__ import annotations

from collections import defaultdict

from shoal.sharding import catalog
from shoal.sharding.catalog import ShoalTable, quote_ident
from shoal.sharding.everywhere import Statement


def statements(sql: str, table: ShoalTable) -> dict[str, list[Statement]]:
    """Per node, what adds the unique constraints or index of ``sql`` (ALTER TABLE or CREATE
    UNIQUE INDEX on ``table``) to the partitions there."""
    per_node: dict[str, list[Statement]] = defaultdict(list)
    schema = quote_ident(table.relation.schema)
    for _, partition, node in catalog.placement(table.relation.oid):
        per_node[node].append(("SELECT shoal._add_unique($1, $2::regclass, $3)",
                               [sql, f"{schema}.{quote_ident(partition)}", table.column]))
    for node in catalog.nodes():
        per_node[node.name].append(("SELECT shoal._forget_partitions($1::regclass)", [table.relation.sql]))
    return per_node
