"""A node that joins a cluster whose nodes already hold shoal tables receives them.

Every node has every distributed table's parent and every global table's copy, so that any node can
run any statement.  A node registered after those tables were made has neither: `shoal up` growing a
cluster (or a DBA after shoal.add_node on every node) calls shoal.sync_node on a node that has them,
which creates on the newcomer, in one transaction, each table it lacks: a distributed table's parent
with every partition a foreign partition (partitions stay where they are; the newcomer holds none),
a global table with a copy of its rows, their sequences (handing out the newcomer's own values),
owner, privileges, catalog rows and a global copy's foreign keys (a distributed table's are its
partitions', and the newcomer holds none); and first the roles it lacks, since remote work runs as
the role that asked for it.
"""

from __future__ import annotations

from collections import defaultdict

from shoal.errors import InvalidParameter, SqlError, UndefinedObject
from shoal.fdw import backend
from shoal.sharding import catalog, distribute, everywhere, foreign_keys, roles, tabledef
from shoal.sharding.catalog import NodeInfo, Relation, quote_ident


def sync_node(name: str) -> int:
    """Create on node ``name`` the shoal tables this node has and it lacks; returns how many."""
    me = catalog.this_node()
    if name == me:
        raise InvalidParameter(f'node "{name}" is this node', hint="Call it on a node that has the tables.")
    target = next((node for node in catalog.nodes() if node.name == name), None)
    if target is None:
        raise UndefinedObject(f'node "{name}" does not exist',
                              hint="Register it on every node first, with shoal.add_node().")
    theirs = {row[0] for row in everywhere.rows(name, "SELECT rolname::text FROM pg_catalog.pg_roles")}
    statements: list = roles.missing(theirs)
    tables = backend.query("SELECT relation::oid, kind FROM shoal.distributed ORDER BY relation::oid")
    if not tables:
        everywhere.run({name: statements})
        return 0
    _check_target_knows_the_nodes(target)
    present = set(everywhere.rows(name, "SELECT n.nspname::text, c.relname::text FROM shoal.distributed d "
                              "JOIN pg_catalog.pg_class c ON c.oid = d.relation "
                              "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"))
    servers_made: set[str] = set()
    synced = 0
    keys: list[str] = []  # a global copy's foreign keys, once every table they reference is there
    for oid, kind in tables:
        rel = catalog.relation(oid)
        if (rel.schema, rel.name) in present:
            continue
        statements.append(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(rel.schema)}")
        if kind == "hash":
            statements += _distributed(rel, target, servers_made)
        else:
            statements += _global(rel, target)
            keys += [add for _, add in foreign_keys.of_table(me, rel.sql)]
        statements += _owner_and_grants(rel, theirs)
        synced += 1
    everywhere.run({name: statements + keys})
    return synced


def _check_target_knows_the_nodes(target: NodeInfo) -> None:
    mine = {node.name for node in catalog.nodes()}
    theirs = {row[0] for row in everywhere.rows(target.name, "SELECT name FROM shoal.node")}
    missing = sorted(mine - theirs)
    if missing:
        raise SqlError(f'node "{target.name}" does not know node(s) {", ".join(missing)}',
                       sqlstate="55000",
                       hint=f"Run shoal.add_node() for them on {target.name} first (shoal up does).")


def _distributed(rel: Relation, target: NodeInfo, servers_made: set[str]) -> list:
    shoal_table = catalog.shoal_table(rel.oid)
    assert shoal_table is not None and shoal_table.column is not None
    table = tabledef.read(rel.oid)
    per_node: dict[str, list] = defaultdict(list)
    identity, _ = distribute.sequences_for(rel, table, [target], per_node)
    statements = list(per_node[target.name])
    statements.append(table.create_sql(rel.sql, f" PARTITION BY HASH ({quote_ident(shoal_table.column)})",
                                       identity.get(target.name)))
    statements += distribute.own_sequences(rel, table, target.name)
    placement = catalog.placement(rel.oid)
    for part, partition, node in placement:
        if node == target.name:
            raise SqlError(f'the catalog places partition {partition} of "{rel.name}" on node '
                           f'"{node}", which does not have the table', sqlstate="XX000")
        if node not in servers_made:
            statements.append(distribute.server_sql(node))
            servers_made.add(node)
        bound = f"FOR VALUES WITH (MODULUS {shoal_table.num_parts}, REMAINDER {part})"
        statements.append(distribute.foreign_partition_sql(rel, partition, bound, node))
    statements += table.indexes
    return statements + distribute.catalog_rows(rel, shoal_table.column, shoal_table.num_parts,
                                                shoal_table.colocation, placement)


def _global(rel: Relation, target: NodeInfo) -> list:
    # writers change every copy, this one too: with them kept out, the copy misses none of their rows
    backend.query(f"LOCK TABLE {rel.sql} IN SHARE MODE")
    table = tabledef.read(rel.oid)
    per_node: dict[str, list] = defaultdict(list)
    identity, _ = distribute.sequences_for(rel, table, [target], per_node)
    rows = backend.query(f"SELECT pg_catalog.array_agg(t::text)::text FROM {rel.sql} t")[0][0]
    return [*per_node[target.name], *distribute.global_copy(rel, table, target.name, identity, rows),
            *distribute.ship_triggers(rel), *distribute.catalog_rows(rel)]


def _owner_and_grants(rel: Relation, present: set[str]) -> list[str]:
    """The table's owner (its partitions' and sequences' too) and privileges, as this node has them;
    roles the node lacks are left out with a warning."""
    owner = backend.query("SELECT pg_catalog.pg_get_userbyid(relowner)::text FROM pg_catalog.pg_class "
                          "WHERE oid = $1::oid", rel.oid)[0][0]
    statements: list[str] = []
    missing: set[str] = set()
    if owner in present:
        # ALTER TABLE ... OWNER takes the owned sequences along, not the partitions
        statements.append(f"ALTER TABLE {rel.sql} OWNER TO {quote_ident(owner)}")
        statements += [
            f"ALTER FOREIGN TABLE {quote_ident(rel.schema)}.{quote_ident(partition)} "
            f"OWNER TO {quote_ident(owner)}" for _, partition, _ in catalog.placement(rel.oid)]
    else:
        missing.add(owner)
    for grant in catalog.grants(rel.sql):
        if grant.role is not None and grant.role not in present:
            missing.add(grant.role)
        else:
            statements.append(grant.grant_sql(rel.sql))
    if missing:
        backend.log("warning", f'shoal: the node lacks role(s) {", ".join(sorted(missing))}, so their '
                    f'ownership of and privileges on "{rel.name}" are not copied there')
    return statements
