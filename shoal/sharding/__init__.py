"""Distributed and global tables: the cluster catalog, placement, DDL everywhere.

Runs inside the servers' backends (through the extension): ``api`` holds the SQL functions written
in Python, ``ddl`` sees DDL statements before PostgreSQL runs them.
"""
