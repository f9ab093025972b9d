"""Roles on every node: role DDL as it goes to the other nodes, and what a node that joins lacks.

Role DDL reaches every node as it is written (shoal.sharding.ddl), except a password, which goes as
the verifier this node stored for it: the channel between nodes is not encrypted.  So only roles
made before a node joined, or where role DDL is not shared (a database without shoal), are missing
somewhere.  sync_node (shoal.sharding.extend) gives them to the newcomer first, since remote work
runs as the role that asked for it: attributes, the hashed password as stored, settings and
memberships.
"""

from __future__ import annotations

from typing import Any

from shoal.fdw import backend
from shoal.sharding.catalog import quote_ident, quote_literal


def without_password(sql: str, info: dict[str, Any]) -> str:
    """``sql``, a CREATE or ALTER ROLE that has just run here, with the password it sets replaced by
    the verifier stored for it here (which the other nodes store as it is).  The extension found
    the password's literal (``password_span``, bytes of ``sql``)."""
    span = info.get("password_span")
    if span is None:
        return sql
    verifier = backend.role_password(info["password_role"])  # None: an empty password clears it
    literal = quote_literal(verifier) if verifier is not None else "NULL"
    data = sql.encode()
    start, end = span
    return (data[:start] + literal.encode() + b" " + data[end:]).decode()


def missing(present: set[str]) -> list[str]:
    """Statements that create on a node the roles this node has and it lacks (``present``: the
    node's roles, to which they are added)."""
    rows = backend.query(
        "SELECT rolname::text, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, "
        "rolreplication, rolbypassrls, rolconnlimit, rolpassword, "
        "CASE WHEN rolvaliduntil IS NULL THEN NULL WHEN rolvaliduntil = 'infinity' THEN 'infinity' "
        "ELSE pg_catalog.to_char(rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') END "
        "FROM pg_catalog.pg_authid WHERE rolname !~ '^pg_' ORDER BY oid")
    statements = []
    created = set()
    for name, superuser, inherit, createrole, createdb, login, replication, bypassrls, limit, \
            password, valid_until in rows:
        if name in present:
            continue
        flags = [("SUPERUSER", superuser), ("INHERIT", inherit), ("CREATEROLE", createrole),
                 ("CREATEDB", createdb), ("LOGIN", login), ("REPLICATION", replication),
                 ("BYPASSRLS", bypassrls)]
        sql = f"CREATE ROLE {quote_ident(name)} WITH " + " ".join(
            flag if on else f"NO{flag}" for flag, on in flags) + f" CONNECTION LIMIT {int(limit)}"
        if password is not None:  # the hashed verifier: PostgreSQL stores it as it is
            sql += f" PASSWORD {quote_literal(password)}"
        if valid_until is not None:
            sql += f" VALID UNTIL {quote_literal(valid_until)}"
        statements.append(sql)
        created.add(name)
    present |= created
    statements += _settings(created)
    members = backend.query(
        "SELECT r.rolname::text, m.rolname::text, a.admin_option FROM pg_catalog.pg_auth_members a "
        "JOIN pg_catalog.pg_roles r ON r.oid = a.roleid JOIN pg_catalog.pg_roles m ON m.oid = a.member "
        "ORDER BY a.roleid, a.member")
    for role, member, admin in members:
        if (role in created or member in created) and role in present and member in present:
            option = " WITH ADMIN OPTION" if admin else ""
            statements.append(f"GRANT {quote_ident(role)} TO {quote_ident(member)}{option}")
    return statements


# settings whose value is a list PostgreSQL quotes itself (pg_dump keeps the same list)
_LIST_SETTINGS = frozenset(("local_preload_libraries", "search_path", "session_preload_libraries",
                            "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"))


def _settings(roles: set[str]) -> list[str]:
    """ALTER ROLE ... SET for the settings of ``roles``, for every database or one by name."""
    if not roles:
        return []
    rows = backend.query(
        "SELECT r.rolname::text, d.datname::text, s.setconfig FROM pg_catalog.pg_db_role_setting s "
        "JOIN pg_catalog.pg_roles r ON r.oid = s.setrole "
        "LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase ORDER BY r.oid, s.setdatabase")
    statements = []
    for role, database, settings in rows:
        if role not in roles:
            continue
        scope = f" IN DATABASE {quote_ident(database)}" if database is not None else ""
        for setting in settings:
            name, _, value = setting.partition("=")
            items = _split_list(value) if name in _LIST_SETTINGS else [value]
            statements.append(f"ALTER ROLE {quote_ident(role)}{scope} SET {quote_ident(name)} TO "
                              + ", ".join(quote_literal(item) for item in items))
    return statements


def _split_list(value: str) -> list[str]:
    """The items of a list setting as PostgreSQL prints it: comma-separated, double-quoted where
    needed (a doubled quote inside)."""
    items: list[str] = []
    item, quoted, pos = "", False, 0
    while pos < len(value):
        char = value[pos]
        if quoted:
            if char == '"' and value[pos + 1:pos + 2] == '"':
                item += '"'
                pos += 1
            elif char == '"':
                quoted = False
            else:
                item += char
        elif char == '"':
            quoted = True
        elif char == ",":
            items.append(item)
            item = ""
        elif not char.isspace():
            item += char
        pos += 1
    items.append(item)
    return items
