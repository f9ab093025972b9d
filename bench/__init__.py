"""Benchmarks of shoal (run as scripts or as ``python -m bench.run``; not part of the installed package).

Importing ``bench`` moves the repository to the end of ``sys.path``: the benchmarks measure the installed
shoal (the package the servers themselves import), and fall back to the source tree only when shoal is not
installed.
"""

import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _REPO] + [str(_REPO)]
