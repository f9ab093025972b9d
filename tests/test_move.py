"""shoal.sharding.move: shoal.move_partition on a real 3-node cluster.

Ports 26401-26403 (and their multiplexers' 27401-27403, 28401-28403) belong to this file.  The
tests share one cluster and run in order: the last one empties n3 and removes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from nodesql import running_cluster, sql

from shoal.cluster import Node

SCHEMA = """
CREATE TABLE users (id int PRIMARY KEY, name text, score numeric DEFAULT 1)
    WITH (distributed_by = 'id', num_parts = 6);
CREATE TABLE orders (uid int, oid int, amount int, UNIQUE (uid, oid))
    WITH (distributed_by = 'uid', colocate_with = 'users');
CREATE INDEX orders_amount ON orders (amount);
ALTER TABLE orders ADD CONSTRAINT orders_user FOREIGN KEY (uid) REFERENCES users ON DELETE CASCADE;
INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 3000) g;
INSERT INTO orders SELECT g % 3000 + 1, g, g % 97 FROM generate_series(1, 9000) g;
GRANT SELECT ON users, orders TO reader;
"""


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[Node]]:
    with running_cluster("shoal-m-", nodes=3, port=26401) as cluster:
        sql(cluster.nodes[0], "CREATE ROLE reader LOGIN")  # on every node: role DDL is shared
        with psycopg.connect(cluster.nodes[0].conninfo, autocommit=True) as conn:
            conn.execute(SCHEMA)
        yield cluster.nodes


def placement(node: Node, part: int) -> list[tuple]:
    return sql(node, "SELECT table_name::text, node FROM shoal.partitions WHERE part = %s ORDER BY 1",
               (part,))


def relkind(node: Node, name: str) -> str:
    return sql(node, "SELECT relkind::text FROM pg_class WHERE relname = %s", (name,))[0][0]


def snapshot(node: Node) -> list[tuple]:
    return sql(node, "SELECT (SELECT count(*) FROM users), (SELECT sum(id) FROM users), "
                     "(SELECT count(*) FROM orders), (SELECT sum(amount) FROM orders)")


def in_part(node: Node, part: int, ids: range) -> list[int]:
    """The ids among ``ids`` that go to partition ``part`` of users."""
    return [r[0] for r in sql(node, "SELECT i FROM generate_series(%s::int, %s::int) i WHERE "
                                    "satisfies_hash_partition('users'::regclass, 6, %s, i)",
                              (ids.start, ids.stop - 1, part))]


def holder(nodes: list[Node], part: int) -> Node:
    name = dict(placement(nodes[0], part))["users"]
    return next(node for node in nodes if node.name == name)


def test_a_partition_moves_with_its_colocated_partitions(nodes: list[Node]) -> None:
    before = snapshot(nodes[0])
    source = holder(nodes, 0)
    target = next(node for node in nodes if node is not source)
    in_partition = sql(source, "SELECT count(*) FROM users_0")[0][0] + \
        sql(source, "SELECT count(*) FROM orders_0")[0][0]
    moved = sql(nodes[2], "SELECT shoal.move_partition('users_0', %s)", (target.name,))[0][0]
    assert moved == in_partition > 0
    for node in nodes:
        assert placement(node, 0) == [("orders", target.name), ("users", target.name)]
        assert snapshot(node) == before
        for name in ("users_0", "orders_0"):
            assert relkind(node, name) == ("r" if node is target else "f")
    # the moved partition has its keys, its indexes and its privileges on the new node
    keys = sql(target, "SELECT indexdef FROM pg_indexes WHERE tablename IN ('users_0', 'orders_0') "
                       "ORDER BY indexname")
    assert [k[0].split(" USING ")[1] for k in keys] == ["btree (amount)", "btree (uid, oid)", "btree (id)"]
    uid, oid = sql(target, "SELECT uid, oid FROM orders_0 LIMIT 1")[0]
    with pytest.raises(psycopg.errors.UniqueViolation):
        sql(source, "INSERT INTO orders VALUES (%s, %s, 0)", (uid, oid))
    with psycopg.connect(nodes[2].conninfo, user="reader", autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE id = %s", (uid,)).fetchone() == (1,)
    # and its foreign key, which holds there
    assert sql(target, "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint "
                       "WHERE conrelid = 'orders_0'::regclass AND contype = 'f'") == [
        ("orders_user", "FOREIGN KEY (uid) REFERENCES users_0(id) ON DELETE CASCADE")]
    new_id = in_part(nodes[0], 0, range(3001, 4000))[0]
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        sql(source, "INSERT INTO orders VALUES (%s, 1, 0)", (new_id,))
    # and it takes the new rows there
    sql(nodes[1], "INSERT INTO users VALUES (%s, 'new')", (new_id,))
    sql(source, "INSERT INTO orders VALUES (%s, 1, 0)", (new_id,))
    assert sql(target, "SELECT name FROM users_0 WHERE id = %s", (new_id,)) == [("new",)]
    sql(nodes[0], "DELETE FROM users WHERE id = %s", (new_id,))
    assert sql(target, "SELECT count(*) FROM orders_0 WHERE uid = %s", (new_id,)) == [(0,)]  # cascaded


def test_moving_to_where_it_is_changes_nothing(nodes: list[Node]) -> None:
    source = holder(nodes, 1)
    assert sql(nodes[0], "SELECT shoal.move_partition('orders_1', %s)", (source.name,)) == [(0,)]
    assert dict(placement(nodes[1], 1)) == {"orders": source.name, "users": source.name}


@pytest.mark.parametrize(("call", "error", "text"), [
    ("SELECT shoal.move_partition('users_1', 'n9')", psycopg.errors.UndefinedObject,
     'node "n9" does not exist'),
    ("SELECT shoal.move_partition('users', 'n1')", psycopg.errors.InvalidParameterValue,
     "is not a partition of a distributed table"),
])
def test_bad_requests_are_clear_errors(nodes: list[Node], call: str, error: type, text: str) -> None:
    with pytest.raises(error, match=text):
        sql(nodes[0], call)


def test_only_a_superuser_moves_partitions(nodes: list[Node]) -> None:
    with psycopg.connect(nodes[0].conninfo, user="reader", autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT shoal.move_partition('users_1', 'n1')")


def test_a_move_that_fails_on_one_node_changes_no_node(nodes: list[Node]) -> None:
    before = [(placement(node, 2), snapshot(node)) for node in nodes]
    source = holder(nodes, 2)
    target = next(node for node in nodes if node is not source)
    # the name of the partition's unique key is taken on the target: creating it there fails
    sql(target, "CREATE TABLE orders_2_uid_oid_key (x int)")
    try:
        with pytest.raises(psycopg.errors.DuplicateTable):
            sql(nodes[0], "SELECT shoal.move_partition('orders_2', %s)", (target.name,))
    finally:
        sql(target, "DROP TABLE orders_2_uid_oid_key")
    assert [(placement(node, 2), snapshot(node)) for node in nodes] == before
    assert relkind(source, "users_2") == "r" and relkind(target, "users_2") == "f"
    assert all(sql(node, "SELECT count(*) FROM pg_prepared_xacts") == [(0,)] for node in nodes)


def test_writers_wait_for_the_move_and_lose_nothing(nodes: list[Node]) -> None:
    source = holder(nodes, 3)
    target = next(node for node in nodes if node is not source)
    ids = in_part(nodes[0], 3, range(5000, 5400))[:20]
    writer = psycopg.connect(nodes[1].conninfo)
    writer.execute("INSERT INTO users VALUES (%s, 'before the move')", (ids[0],))  # holds its lock
    result: list = []
    mover = threading.Thread(target=lambda: result.append(
        sql(nodes[0], "SELECT shoal.move_partition('users_3', %s)", (target.name,))))
    mover.start()
    time.sleep(1.0)
    assert mover.is_alive(), "the move did not wait for the open writer"
    writer.commit()  # now the move goes on
    mover.join(timeout=60)
    assert result and result[0][0][0] > 0
    for i in ids[1:]:
        writer.execute("INSERT INTO users VALUES (%s, 'after the move')", (i,))
    writer.commit()
    writer.close()
    names = sql(target, "SELECT name, count(*) FROM users_3 WHERE id >= 5000 GROUP BY name ORDER BY name")
    assert names == [("after the move", len(ids) - 1), ("before the move", 1)]
    sql(nodes[0], "DELETE FROM users WHERE id >= 5000")


def test_a_node_emptied_by_moves_can_be_removed(nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    before = snapshot(n1)
    for part, name in sql(n1, "SELECT part, partition_name::text FROM shoal.partitions "
                              "WHERE table_name = 'users'::regclass AND node = 'n3'"):
        sql(n1, "SELECT shoal.move_partition(%s, %s)", (name, "n1" if part % 2 else "n2"))
    assert sql(n1, "SELECT count(*) FROM shoal.partitions WHERE node = 'n3'") == [(0,)]
    for node in (n1, n2):
        sql(node, "SELECT shoal.remove_node('n3')")
    for node in (n1, n2):
        assert snapshot(node) == before
        assert sql(node, "SELECT count(*) FROM users WHERE id BETWEEN 1 AND 3000") == [(3000,)]
