"""shoal: sharded PostgreSQL 15 in the Shardman style.

This package is imported in two very different places: by the `shoal` command line tool and by the
Python interpreter embedded in every PostgreSQL backend (through the C extension). It must therefore stay
cheap to import: no side effects and no heavy imports here.
"""

__version__ = "0.1.0"

# The design card's folders planner/ and multiplexer/ sit beside this package in the repository and
# are installed as shoal.planner and shoal.multiplexer.  Run from a source tree (`python -m shoal` in
# a clone), the repository itself serves as a second home of the package's subpackages.
def _source_tree_subpackages() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if (root / "multiplexer" / "protocol.py").is_file() and (root / "planner").is_dir():
        __path__.append(str(root))


_source_tree_subpackages()
