"""Where the PostgreSQL 15 server programs (initdb, pg_ctl, postgres) are."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from shoal.errors import ShoalError

PG_MAJOR = 15
# Debian keeps each major version's server programs out of PATH, in a versioned directory.
DEBIAN_BIN = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")


def pg_bin() -> Path:
    """The directory holding initdb and pg_ctl: $PG_BIN (as testgres uses it), Debian's directory for
    PostgreSQL 15, or pg_config --bindir, in that order."""
    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    candidates.append(DEBIAN_BIN)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], check=True, capture_output=True, text=True)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.CalledProcessError):
            pass
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise ShoalError(f"PostgreSQL {PG_MAJOR} server programs (initdb, pg_ctl) not found",
                     f"install postgresql-{PG_MAJOR} (make deps), or set PG_BIN to their directory")


def major_version(bindir: Path) -> int:
    """Major version of the server programs in `bindir` (from `initdb --version`)."""
    out = subprocess.run([str(bindir / "initdb"), "--version"], check=True, capture_output=True, text=True)
    # "initdb (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
    return int(out.stdout.split(")")[1].split()[0].split(".")[0])
