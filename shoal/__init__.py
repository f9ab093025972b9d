"""shoal: sharded PostgreSQL 15 in the Shardman style.

This package is imported in two very different places: by the `shoal` command line tool and by the
Python interpreter embedded in every PostgreSQL backend (through the C extension). It must therefore stay
cheap to import: no side effects and no heavy imports here.
"""

__version__ = "0.1.0"
