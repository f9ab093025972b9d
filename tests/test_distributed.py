"""Distributed and global tables on a real 3-node cluster: what the differential suite cannot see.

Sequences that stay unique across nodes, privileges that reach the partitions, roles that are the same
on every node, atomic commit of writes on several nodes (no prepared transaction left behind, a
failure on one node undoes the others), DDL everywhere and its cleanup, node removal, EXPLAIN.
Ports 26600-26699 belong to this file.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from nodesql import running_cluster

from shoal.cluster import Node


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[Node]]:
    with running_cluster("shoal-d-", nodes=3, port=26601) as cluster:
        yield cluster.nodes


def sql(node: Node, query: str, params: tuple = (), user: str | None = None) -> list[tuple]:
    conninfo = node.conninfo + (f" user={user}" if user else "")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def everywhere(nodes: list[Node], query: str) -> list[list[tuple]]:
    return [sql(n, query) for n in nodes]


def assert_same_everywhere(nodes: list[Node], query: str) -> list[tuple]:
    answers = everywhere(nodes, query)
    assert all(a == answers[0] for a in answers), answers
    return answers[0]


def no_prepared_transactions(nodes: list[Node]) -> bool:
    return all(sql(n, "SELECT count(*) FROM pg_prepared_xacts")[0][0] == 0 for n in nodes)


def test_serial_values_are_unique_across_nodes(nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    sql(n1, "CREATE TABLE seq_t (id bigserial PRIMARY KEY, who text)")
    sql(n1, "INSERT INTO seq_t (who) SELECT 'before' FROM generate_series(1, 5)")
    sql(n1, "SELECT shoal.create_distributed_table('seq_t', 'id')")
    for node in nodes:
        sql(node, "INSERT INTO seq_t (who) SELECT %s FROM generate_series(1, 20)", (node.name,))
    ids = [r[0] for r in sql(n2, "SELECT id FROM seq_t")]
    assert len(ids) == 65 and len(set(ids)) == 65
    assert sorted(ids)[:5] == [1, 2, 3, 4, 5]  # rows moved with their values
    assert_same_everywhere(nodes, "SELECT count(*), count(DISTINCT id) FROM seq_t")
    ids = {r[0] for r in sql(n3, "SELECT shoal.unique_id() FROM generate_series(1, 1000)")}
    ids |= {r[0] for r in sql(n1, "SELECT shoal.unique_id() FROM generate_series(1, 1000)")}
    assert len(ids) == 2000


def test_writes_on_several_nodes_commit_atomically(nodes: list[Node]) -> None:
    n1, n2, _ = nodes
    sql(n1, "CREATE TABLE acct (id int PRIMARY KEY, balance int CHECK (balance >= 0)) "
            "WITH (distributed_by = 'id', num_parts = 6)")
    sql(n2, "INSERT INTO acct SELECT g, 100 FROM generate_series(1, 60) g")
    # one statement touching every partition: all nodes prepared, then committed
    sql(n2, "UPDATE acct SET balance = balance + 1")
    assert sql(n1, "SELECT sum(balance) FROM acct")[0][0] == 6060
    assert no_prepared_transactions(nodes)
    # a transfer that fails on one node (the CHECK) leaves every node as it was
    with psycopg.connect(n1.conninfo) as conn:
        conn.execute("UPDATE acct SET balance = balance + 500 WHERE id BETWEEN 1 AND 30")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE acct SET balance = balance - 500 WHERE id BETWEEN 31 AND 60")
    assert assert_same_everywhere(nodes, "SELECT sum(balance), min(balance), max(balance) FROM acct") == [
        (6060, 101, 101)]
    assert no_prepared_transactions(nodes)


def test_savepoint_rollback_undoes_remote_writes(nodes: list[Node]) -> None:
    n1, _, n3 = nodes
    sql(n1, "CREATE TABLE sp (id int PRIMARY KEY, v int) WITH (distributed_by = 'id', num_parts = 3)")
    with psycopg.connect(n3.conninfo) as conn:
        conn.execute("INSERT INTO sp SELECT g, 0 FROM generate_series(1, 30) g")
        conn.execute("SAVEPOINT a")
        conn.execute("UPDATE sp SET v = 1")
        conn.execute("ROLLBACK TO SAVEPOINT a")
        conn.execute("UPDATE sp SET v = 2 WHERE id <= 10")
    answer = assert_same_everywhere(nodes, "SELECT v, count(*) FROM sp GROUP BY v ORDER BY v")
    assert answer == [(0, 20), (2, 10)]


def test_global_table_written_from_every_node(nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    sql(n2, "CREATE TABLE g (k text PRIMARY KEY, v int, d date DEFAULT '2024-01-01') WITH (global)")
    sql(n1, "INSERT INTO g (k, v) SELECT 'k' || i, i FROM generate_series(1, 50) i")
    sql(n2, "UPDATE g SET v = -v WHERE v %% 2 = 0")
    sql(n3, "DELETE FROM g WHERE v > 40")
    sql(n3, "INSERT INTO g VALUES ('k1', 0, '2025-01-01') ON CONFLICT (k) DO UPDATE SET v = 1000")
    rows = assert_same_everywhere(nodes, "SELECT k, v, d FROM g ORDER BY k")
    assert len(rows) == 45 and ("k1", 1000, rows[0][2]) == rows[0]
    sql(n1, "TRUNCATE g")
    assert assert_same_everywhere(nodes, "SELECT count(*) FROM g") == [(0,)]
    # without a primary key: rows are matched whole, duplicates counted
    sql(n1, "CREATE TABLE g2 (k text, v float8, j json, p point)")
    sql(n1, "INSERT INTO g2 VALUES ('a', 0.1, '{\"x\":  1}', '(1,2)'), ('a', 0.1, '{\"x\":  1}', '(1,2)'), "
            "('b', 1e-300, '[]', NULL)")
    sql(n1, "SELECT shoal.create_global_table('g2')")
    sql(n2, "DELETE FROM g2 WHERE ctid = (SELECT min(ctid) FROM g2 WHERE k = 'a')")
    sql(n3, "UPDATE g2 SET v = v * 2 WHERE k = 'b'")
    rows = assert_same_everywhere(nodes, "SELECT k, v::text, j::text, p::text FROM g2 ORDER BY k")
    assert rows == [("a", "0.1", '{"x":  1}', "(1,2)"), ("b", "2e-300", "[]", None)]


def test_ddl_reaches_every_node_and_drop_cleans_the_catalog(nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    sql(n1, "CREATE TABLE ddl_t (id int PRIMARY KEY, a text) WITH (distributed_by = 'id', num_parts = 3)")
    sql(n2, "INSERT INTO ddl_t SELECT g, 'x' FROM generate_series(1, 9) g")
    sql(n2, "ALTER TABLE ddl_t ADD COLUMN b int DEFAULT 7")
    sql(n3, "ALTER TABLE ddl_t RENAME COLUMN a TO aa")
    sql(n1, "CREATE INDEX ddl_t_b ON ddl_t (b)")
    assert assert_same_everywhere(nodes, "SELECT sum(b), count(aa) FROM ddl_t") == [(63, 9)]
    assert assert_same_everywhere(nodes, "SELECT count(*) FROM pg_indexes WHERE indexname = 'ddl_t_b'") == [
        (1,)]
    sql(n3, "DROP INDEX ddl_t_b")
    assert assert_same_everywhere(nodes, "SELECT count(*) FROM pg_class WHERE relname = 'ddl_t_b'") == [(0,)]
    # a statement that fails on one node changes no node
    sql(n3, "CREATE TABLE clash (x int); CREATE INDEX ddl_t_c ON clash (x)")
    with pytest.raises(psycopg.errors.DuplicateTable, match="on node n3"):
        sql(n1, "CREATE INDEX ddl_t_c ON ddl_t (b)")
    assert all(sql(n, "SELECT count(*) FROM pg_indexes WHERE indexname = 'ddl_t_c' AND tablename = 'ddl_t'")
               == [(0,)] for n in nodes)
    sql(n2, "DROP TABLE ddl_t")
    assert assert_same_everywhere(nodes, "SELECT count(*) FROM shoal.partitions WHERE table_name::text = "
                                         "'ddl_t'") == [(0,)]
    assert assert_same_everywhere(nodes, "SELECT to_regclass('ddl_t_0')::text") == [(None,)]


def test_privileges_reach_the_partitions(nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    sql(n1, "CREATE ROLE reader LOGIN")  # on every node (test_roles_are_the_same_on_every_node)
    sql(n1, "CREATE TABLE secret (id int PRIMARY KEY, s text) WITH (distributed_by = 'id', num_parts = 3)")
    sql(n1, "INSERT INTO secret SELECT g, 's' FROM generate_series(1, 30) g")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        sql(n2, "SELECT count(*) FROM secret", user="reader")
    sql(n3, "GRANT SELECT ON secret TO reader")
    assert sql(n2, "SELECT count(*) FROM secret", user="reader") == [(30,)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        sql(n2, "UPDATE secret SET s = 'no'", user="reader")
    sql(n3, "GRANT UPDATE ON secret TO reader")
    # a two-phase commit by a role that may not write shoal's record of decisions
    decisions = "SELECT count(*) FROM shoal.decided"
    before = sql(n2, decisions)[0][0]
    assert sql(n2, "UPDATE secret SET s = 'yes' RETURNING s", user="reader") == [("yes",)] * 30
    assert sql(n2, decisions)[0][0] == before + 1
    sql(n3, "REVOKE SELECT, UPDATE ON secret FROM reader")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        sql(n1, "SELECT count(*) FROM secret", user="reader")


def roles(node: Node, names: tuple[str, ...]) -> list[tuple]:
    return sql(node, "SELECT rolname::text, rolcanlogin, rolconnlimit, rolpassword FROM pg_authid "
                     "WHERE rolname = ANY(%s) ORDER BY 1", (list(names),))


def test_roles_are_the_same_on_every_node(nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    names = ("r_app", "r_grp", "r_app2")
    sql(n2, "CREATE ROLE r_app LOGIN PASSWORD 'secret' CONNECTION LIMIT 7")
    sql(n3, "CREATE ROLE r_grp; GRANT r_grp TO r_app")
    assert [r[:3] for r in roles(n1, names)] == [("r_app", True, 7), ("r_grp", False, -1)]
    # the password travels as the verifier n2 stored (two nodes hashing it would salt it apart)
    password = "SELECT rolpassword FROM pg_authid WHERE rolname = 'r_app'"
    first = assert_same_everywhere(nodes, password)[0][0]
    assert first.startswith("SCRAM-SHA-256$")
    for node in nodes:
        assert sql(node, "SELECT pg_has_role('r_app', 'r_grp', 'member')") == [(True,)]
    sql(n1, "ALTER USER CURRENT_USER WITH PASSWORD 'mine'", user="r_app")
    assert assert_same_everywhere(nodes, password)[0][0] not in (first, None)
    sql(n3, "ALTER ROLE r_app PASSWORD ''")  # PostgreSQL clears an empty one
    assert assert_same_everywhere(nodes, password) == [(None,)]
    # however the literal is written, with what follows it kept
    for statement in ("ALTER ROLE r_app ENCRYPTED PASSWORD E'it''s\\x41é' /* c */ CONNECTION LIMIT 4",
                      "SELECT 1; ALTER ROLE r_app PASSWORD U&'d!0061t!+000061' UESCAPE '!' VALID UNTIL "
                      "'2031-01-01'",
                      "ALTER ROLE r_app PASSWORD $q$dollar's$q$"):
        sql(n2, statement)
        assert assert_same_everywhere(nodes, password)[0][0].startswith("SCRAM-SHA-256$")
    assert assert_same_everywhere(nodes, "SELECT rolconnlimit, rolvaliduntil::date::text FROM pg_roles "
                                         "WHERE rolname = 'r_app'") == [(4, "2031-01-01")]
    # privileges through membership reach the partitions read as r_app on the other nodes
    sql(n1, "CREATE TABLE ledger (id int PRIMARY KEY) WITH (distributed_by = 'id', num_parts = 3)")
    sql(n1, "INSERT INTO ledger SELECT generate_series(1, 30)")
    sql(n1, "GRANT SELECT ON ledger TO r_grp")
    assert sql(n2, "SELECT count(*) FROM ledger", user="r_app") == [(30,)]
    sql(n1, "ALTER ROLE r_app CONNECTION LIMIT 2; ALTER ROLE r_app SET work_mem = '3MB'")
    assert everywhere(nodes, "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'r_app'") == [[(2,)]] * 3
    assert assert_same_everywhere(nodes, "SELECT s.setconfig FROM pg_db_role_setting s "
                                         "JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = 'r_app'"
                                  ) == [(["work_mem=3MB"],)]
    sql(n2, "REVOKE r_grp FROM r_app")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        sql(n1, "SELECT count(*) FROM ledger", user="r_app")
    # a rolled back CREATE ROLE leaves no role anywhere
    with psycopg.connect(n1.conninfo) as conn:
        conn.execute("CREATE ROLE r_tmp")
        conn.rollback()
    assert everywhere(nodes, "SELECT count(*) FROM pg_roles WHERE rolname = 'r_tmp'") == [[(0,)]] * 3
    # a statement that fails on one node changes no node: a role made on n3 alone (in a database
    # without shoal, where role DDL is not shared) ...
    with psycopg.connect(n3.conninfo, dbname="template1", autocommit=True) as conn:
        conn.execute("CREATE ROLE r_legacy")
    with pytest.raises(psycopg.errors.DuplicateObject, match='on node n3: role "r_legacy" already exists'):
        sql(n1, "CREATE ROLE r_legacy")
    assert [r[0][0] for r in everywhere(nodes, "SELECT count(*) FROM pg_roles WHERE rolname = 'r_legacy'")
            ] == [0, 0, 1]
    # ... and a role that owns something on n2 only
    sql(n1, "REVOKE SELECT ON ledger FROM r_grp")
    sql(n2, "CREATE TABLE n2_only (i int); ALTER TABLE n2_only OWNER TO r_grp")
    with pytest.raises(psycopg.errors.DependentObjectsStillExist, match="on node n2"):
        sql(n3, "DROP ROLE r_grp")
    assert [r[:3] for r in roles(n1, names)] == [("r_app", True, 2), ("r_grp", False, -1)]
    sql(n2, "DROP TABLE n2_only")
    sql(n3, "ALTER ROLE r_app RENAME TO r_app2")
    assert [r[0] for r in roles(n2, names)] == ["r_app2", "r_grp"]
    sql(n1, "DROP ROLE r_app2, r_grp")
    assert everywhere(nodes, "SELECT count(*) FROM pg_roles WHERE rolname ~ '^r_(app|grp)'") == [[(0,)]] * 3
    assert no_prepared_transactions(nodes)


def test_foreign_keys_hold_on_every_node(nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    sql(n1, "CREATE TABLE fk_users (id int PRIMARY KEY) WITH (distributed_by = 'id', num_parts = 3)")
    sql(n1, "CREATE TABLE fk_orders (uid int, oid int, item text, PRIMARY KEY (uid, oid)) "
            "WITH (distributed_by = 'uid', colocate_with = 'fk_users')")
    sql(n1, "CREATE TABLE fk_items (code text PRIMARY KEY) WITH (global)")
    # declared with the table, as for a plain one
    sql(n2, "CREATE TABLE fk_sizes (item text REFERENCES fk_items, size int) WITH (global)")
    sql(n2, "INSERT INTO fk_users SELECT generate_series(1, 30)")
    sql(n2, "INSERT INTO fk_items VALUES ('pen'), ('ink')")
    sql(n3, "INSERT INTO fk_orders SELECT g %% 30 + 1, g, 'pen' FROM generate_series(1, 90) g")
    sql(n2, "ALTER TABLE fk_orders ADD CONSTRAINT fk_orders_user FOREIGN KEY (uid) REFERENCES fk_users "
            "ON DELETE CASCADE")
    sql(n3, "ALTER TABLE fk_orders ADD FOREIGN KEY (item) REFERENCES fk_items (code)")
    sql(n3, "CREATE TABLE fk_notes (uid int, note text, FOREIGN KEY (uid) REFERENCES fk_users (id)) "
            "WITH (distributed_by = 'uid', colocate_with = 'fk_users')")
    for node in nodes:
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="fk_notes_uid_fkey"):
            sql(node, "INSERT INTO fk_notes VALUES (99, 'nobody')")
    for node in nodes:  # every partition, local or not, is checked where it is
        for uid in range(31, 34):
            with pytest.raises(psycopg.errors.ForeignKeyViolation, match="fk_orders_user"):
                sql(node, "INSERT INTO fk_orders VALUES (%s, 1, 'pen')", (uid,))
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="fk_orders_item_fkey"):
            sql(node, "UPDATE fk_orders SET item = 'cap' WHERE uid = 5")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            sql(node, "INSERT INTO fk_sizes VALUES ('cap', 1)")
    sql(n3, "DELETE FROM fk_users WHERE id BETWEEN 1 AND 10")  # on every node: cascades where it is
    assert sql(n1, "SELECT count(*), min(uid) FROM fk_orders") == [(60, 11)]
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        sql(n2, "DELETE FROM fk_items WHERE code = 'pen'")
    sql(n1, "DELETE FROM fk_items WHERE code = 'ink'")  # referenced by no row
    # what cannot hold on each node alone is refused, and changes nothing
    sql(n1, "CREATE TABLE fk_other (id int PRIMARY KEY) WITH (distributed_by = 'id', num_parts = 3)")
    sql(n2, "CREATE TABLE fk_plain (id int PRIMARY KEY)")  # of n2 alone
    refused = [
        ("ALTER TABLE fk_orders ADD FOREIGN KEY (uid) REFERENCES fk_other", "co-located"),
        ("ALTER TABLE fk_orders ADD FOREIGN KEY (oid) REFERENCES fk_users", "pair the distribution columns"),
        ("ALTER TABLE fk_sizes ADD FOREIGN KEY (size) REFERENCES fk_users", "co-located"),
        ("ALTER TABLE fk_orders ADD FOREIGN KEY (oid) REFERENCES fk_plain", "neither"),
        ("ALTER TABLE fk_orders ADD COLUMN buyer int REFERENCES fk_users", "ALTER TABLE of their own"),
        ("CREATE TABLE fk_refused (id int REFERENCES fk_other) WITH (distributed_by = 'id', "
         "colocate_with = 'fk_users')", "co-located"),
    ]
    for statement, message in refused:
        with pytest.raises(psycopg.errors.FeatureNotSupported, match=message):
            sql(n2, statement)
    sql(n1, "CREATE TABLE fk_colors (code text PRIMARY KEY) WITH (global)")
    with pytest.raises(psycopg.errors.ForeignKeyViolation):  # rows violate it: no partition has it
        sql(n1, "ALTER TABLE fk_orders ADD CONSTRAINT fk_bad FOREIGN KEY (item) REFERENCES fk_colors")
    assert everywhere(nodes, "SELECT * FROM shoal.foreign_keys WHERE table_name::text LIKE 'fk_orders'") == [[
        ("fk_orders", "fk_orders_item_fkey", ["item"], "fk_items", ["code"], "NO ACTION", "NO ACTION", True),
        ("fk_orders", "fk_orders_user", ["uid"], "fk_users", ["id"], "NO ACTION", "CASCADE", True),
    ]] * 3
    constraints = ("SELECT count(*) FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid "
                   "WHERE r.relname LIKE 'fk_orders%%' AND c.contype = 'f'")
    assert [r[0][0] for r in everywhere(nodes, constraints)] == [2, 2, 2]  # 2 keys x 1 local partition
    # dropped from every partition
    sql(n3, "ALTER TABLE fk_orders DROP CONSTRAINT fk_orders_user")
    assert [r[0][0] for r in everywhere(nodes, constraints)] == [1, 1, 1]
    with pytest.raises(psycopg.errors.UndefinedObject, match="does not exist"):
        sql(n1, "ALTER TABLE fk_orders DROP CONSTRAINT fk_orders_user")
    assert sql(n1, "SELECT to_regclass('fk_refused')") == [(None,)]  # the refused CREATE left nothing
    sql(n2, "INSERT INTO fk_orders VALUES (31, 1, 'pen')")
    # plain tables with foreign keys become shoal tables, and their keys follow
    sql(n1, "CREATE TABLE fk_p_items (code text PRIMARY KEY); CREATE TABLE fk_p_lines (uid int, "
            "item text REFERENCES fk_p_items); INSERT INTO fk_p_items VALUES ('a'); "
            "INSERT INTO fk_p_lines VALUES (1, 'a')")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="fk_p_lines reference it"):
        sql(n1, "SELECT shoal.create_distributed_table('fk_p_items', 'code')")
    sql(n1, "SELECT shoal.create_global_table('fk_p_items')")  # the plain table's key holds on
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        sql(n1, "INSERT INTO fk_p_lines VALUES (2, 'b')")
    sql(n1, "SELECT shoal.create_distributed_table('fk_p_lines', 'uid')")
    for node in nodes:
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="fk_p_lines_item_fkey"):
            sql(node, "INSERT INTO fk_p_lines SELECT g, 'b' FROM generate_series(1, 6) g")
    assert sql(n3, "SELECT count(*) FROM fk_p_lines") == [(1,)]
    assert no_prepared_transactions(nodes)


def test_bad_requests_are_clear_errors(nodes: list[Node]) -> None:
    n1, n2, _ = nodes
    sql(n1, "CREATE TABLE bad (id int, p point, u int UNIQUE)")
    cases: list[tuple[str, type[Exception], str]] = [
        ("SELECT shoal.create_distributed_table('bad', 'nope')", psycopg.errors.UndefinedColumn, "nope"),
        ("SELECT shoal.create_distributed_table('bad', 'id')", psycopg.errors.InvalidTableDefinition,
         "does not include the distribution column"),
        ("SELECT shoal.remove_node('n2')", psycopg.errors.ObjectInUse, "still holds"),
        ("SELECT shoal.remove_node('n9')", psycopg.errors.RaiseException, "does not exist"),
        ("CREATE TABLE bad2 (id int) WITH (num_parts = 4)", psycopg.errors.InvalidParameterValue,
         "distributed_by"),
    ]
    for statement, error, message in cases:
        with pytest.raises(error, match=message):
            sql(n1, statement)
    sql(n1, "ALTER TABLE bad DROP CONSTRAINT bad_u_key")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="partitions"):
        sql(n1, "SELECT shoal.create_distributed_table('bad', 'id', 0)")
    with pytest.raises(psycopg.errors.UndefinedObject, match="hash"):
        sql(n1, "SELECT shoal.create_distributed_table('bad', 'p')")
    # nothing half-done: the table is still a plain table on n1, unknown elsewhere
    assert sql(n1, "SELECT relkind::text FROM pg_class WHERE relname = 'bad'") == [("r",)]
    assert sql(n2, "SELECT to_regclass('bad')") == [(None,)]
    assert sql(n1, "SELECT count(*) FROM shoal.distributed WHERE relation::text = 'bad'") == [(0,)]
    sql(n1, "SELECT shoal.create_distributed_table('bad', 'id', 2)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="already distributed"):
        sql(n1, "SELECT shoal.create_distributed_table('bad', 'id')")
    with pytest.raises(psycopg.errors.InvalidTableDefinition, match="unique index .* distribution column"):
        sql(n2, "CREATE UNIQUE INDEX ON bad (u)")
    sql(n1, "CREATE TABLE bad3 (id int) WITH (distributed_by = 'id', num_parts = 3)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="partitions"):
        sql(n1, "CREATE TABLE bad4 (id int) "
                "WITH (distributed_by = 'id', num_parts = 4, colocate_with = 'bad3')")


def test_unique_keys_added_after_distribution_hold_on_every_partition(nodes: list[Node]) -> None:
    n1, n2, n3 = nodes
    sql(n1, "CREATE TABLE late (id int, email text, v int) WITH (distributed_by = 'id', num_parts = 6)")
    sql(n1, "INSERT INTO late SELECT g, 'u' || g, g FROM generate_series(1, 60) g")
    sql(n1, "INSERT INTO late VALUES (5, 'again', 0)")  # a duplicate id

    # a key the rows break: refused on the node holding them, and nothing is changed on any node
    with pytest.raises(psycopg.errors.UniqueViolation):
        sql(n2, "ALTER TABLE late ADD PRIMARY KEY (id)")
    indexes = "SELECT count(*) FROM pg_indexes WHERE tablename ~ '^late'"
    assert everywhere(nodes, indexes) == [[(0,)]] * 3
    sql(n1, "DELETE FROM late WHERE email = 'again'")

    sql(n2, "ALTER TABLE late ADD CONSTRAINT late_pk PRIMARY KEY (id)")
    sql(n3, "CREATE UNIQUE INDEX late_email ON late (email, id) WHERE v > 0")
    # each node holds two of the six partitions, each with both
    assert everywhere(nodes, indexes) == [[(4,)]] * 3
    for node in nodes:  # the key holds wherever the row goes, from every node
        for key in (1, 2, 3, 4, 5, 6):
            with pytest.raises(psycopg.errors.UniqueViolation):
                sql(node, f"INSERT INTO late VALUES ({key}, 'dup', 1)")
    with psycopg.connect(n1.conninfo, autocommit=True) as session:  # keeps its handlers between statements
        upsert = "INSERT INTO late VALUES (3, 'x', 1), (61, 'y', 1) ON CONFLICT (id) DO UPDATE SET v = 100"
        session.execute(upsert)
        assert sql(n1, "SELECT id, v FROM late WHERE id IN (3, 61) ORDER BY id") == [(3, 100), (61, 1)]
        # another key on the table: the session learns of it, and each remote row goes with the
        # one the statement names
        sql(n2, "CREATE UNIQUE INDEX ON late (id, v)")
        session.execute(upsert.replace("100", "200"))
        assert sql(n1, "SELECT id, v FROM late WHERE id IN (3, 61) ORDER BY id") == [(3, 200), (61, 200)]
        session.execute("INSERT INTO late VALUES (3, 'x', 200), (61, 'y', 200) "
                        "ON CONFLICT (v, id) DO UPDATE SET email = 'by (v, id)'")
        assert sql(n1, "SELECT email FROM late WHERE id IN (3, 61)") == [("by (v, id)",)] * 2
        with pytest.raises(psycopg.errors.InvalidColumnReference, match="no unique or exclusion constraint"):
            session.execute("INSERT INTO late VALUES (3, 'x', 1) ON CONFLICT (v) DO UPDATE SET v = 0")

    with pytest.raises(psycopg.errors.InvalidTableDefinition, match='distribution column "id"'):
        sql(n1, "ALTER TABLE late ADD UNIQUE (email)")
    with pytest.raises(psycopg.errors.InvalidTableDefinition, match='distribution column "id"'):
        sql(n1, "CREATE UNIQUE INDEX ON late (lower(email))")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="of their own"):
        sql(n1, "ALTER TABLE late ADD UNIQUE (id, v), ADD COLUMN w int")
    assert everywhere(nodes, indexes) == [[(6,)]] * 3
    assert sql(n2, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'late'") == [(3,)]
    sql(n1, "DROP TABLE late")


def test_upsert_names_one_of_several_unique_keys_from_every_node(nodes: list[Node]) -> None:
    """ON CONFLICT (columns) DO UPDATE on a table with two unique keys, rows on every node: the
    same rows as on a plain table, whichever key the statement names, also in WITH queries."""
    n1 = nodes[0]
    columns = "id int PRIMARY KEY, code text NOT NULL, v int, UNIQUE (code, id)"
    sql(n1, f"CREATE TABLE keys2 ({columns}) WITH (distributed_by = 'id', num_parts = 6)")
    for node in nodes:
        sql(node, f"CREATE TABLE keys2_plain ({columns})")
    statements = [
        "INSERT INTO {t} SELECT g, 'c' || g, 0 FROM generate_series(1, 30) g",
        "INSERT INTO {t} SELECT g, 'c' || g, g FROM generate_series(1, 40, 3) g "
        "ON CONFLICT (id) DO UPDATE SET v = {t}.v + excluded.v",
        "INSERT INTO {t} SELECT g, 'c' || g, -g FROM generate_series(2, 45, 4) g "
        "ON CONFLICT (code, id) DO UPDATE SET v = excluded.v * 10 WHERE {t}.v = 0",
        "INSERT INTO {t} SELECT g, 'd' || g, 1 FROM generate_series(50, 60) g "
        "ON CONFLICT (id, code) DO UPDATE SET v = 0",
        # in a WITH query too
        "WITH a AS (INSERT INTO {t} SELECT g, 'c' || g, 9 FROM generate_series(1, 40, 7) g "
        "ON CONFLICT (code, id) DO UPDATE SET v = {t}.v - 1 RETURNING *) "
        "SELECT * FROM a",
    ]
    try:
        for node in nodes:
            sql(node, "TRUNCATE keys2")
            for statement in statements:
                returning = "" if statement.startswith("WITH") else " RETURNING *"
                shoal_rows = sql(node, statement.format(t="keys2") + returning)
                plain_rows = sql(node, statement.format(t="keys2_plain") + returning)
                assert sorted(shoal_rows) == sorted(plain_rows), statement
            rows = "SELECT * FROM {t} ORDER BY id"
            assert sql(node, rows.format(t="keys2")) == sql(node, rows.format(t="keys2_plain"))
            sql(node, "TRUNCATE keys2_plain")
            with pytest.raises(psycopg.errors.InvalidColumnReference):
                sql(node, "INSERT INTO keys2 VALUES (1, 'c1', 1) ON CONFLICT (v) DO UPDATE SET v = 2")
            with pytest.raises(psycopg.errors.FeatureNotSupported, match="another INSERT into it"):
                sql(node, "WITH a AS (INSERT INTO keys2 VALUES (1, 'c1', 1) ON CONFLICT (id) DO UPDATE "
                          "SET v = 2 RETURNING id) INSERT INTO keys2 SELECT id + 100, 'x', 0 FROM a")
    finally:
        sql(n1, "DROP TABLE keys2")
        for node in nodes:
            sql(node, "DROP TABLE keys2_plain")


def test_explain_names_node_and_remote_sql(nodes: list[Node]) -> None:
    n1 = nodes[0]
    sql(n1, "CREATE TABLE ex (id int PRIMARY KEY, v text) WITH (distributed_by = 'id', num_parts = 3)")
    plan = "\n".join(r[0] for r in sql(n1, "EXPLAIN (VERBOSE, COSTS OFF) SELECT v FROM ex WHERE id > 5"))
    assert "Node: n2" in plan and "Node: n3" in plan and "Remote SQL" in plan
    parts = sql(n1, "SELECT partition_name, node, is_local FROM shoal.partitions "
                    "WHERE table_name = 'ex'::regclass")
    assert sorted(p[1] for p in parts) == ["n1", "n2", "n3"]
    assert [p[2] for p in parts] == [p[1] == "n1" for p in parts]
