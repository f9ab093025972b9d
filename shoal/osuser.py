"""Which OS user runs the PostgreSQL servers, and how to act as that user.

PostgreSQL refuses to run as root. When shoal is invoked as root it therefore runs the servers as an
unprivileged *service user*: `postgres` when it exists (Debian's packages create it), otherwise a system
user `shoal` that we create. Invoked as anyone else, shoal runs the servers as the invoking user.

Both the cluster code and the test set-up (`python -m shoal.osuser` prints the user) rely on this module,
so the rule lives in exactly one place.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Sequence
from pathlib import Path

from shoal.errors import ShoalError

PREFERRED_USER = "postgres"
FALLBACK_USER = "shoal"
FALLBACK_HOME = "/var/lib/shoal"


def is_root() -> bool:
    """True when this process runs with root privileges."""
    return os.geteuid() == 0


def current_user() -> str:
    """Name of the effective OS user of this process."""
    return pwd.getpwuid(os.geteuid()).pw_name


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def service_user(create: bool = True) -> str:
    """The OS user that runs (or would run) PostgreSQL servers started by this process.

    As root, the `shoal` fallback user is created when neither it nor `postgres` exists (unless `create`
    is false, in which case its name is returned all the same).
    """
    if not is_root():
        return current_user()
    if user_exists(PREFERRED_USER):
        return PREFERRED_USER
    if not user_exists(FALLBACK_USER) and create:
        _create_system_user(FALLBACK_USER, FALLBACK_HOME)
    return FALLBACK_USER


def _create_system_user(name: str, home: str) -> None:
    # A system account without a login shell: it only ever runs servers through runuser.
    cmd = ["useradd", "--system", "--user-group", "--home-dir", home, "--no-create-home",
           "--shell", "/usr/sbin/nologin", name]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise ShoalError(f"cannot create OS user {name!r}: useradd not found",
                         "install the 'passwd' package, or create the user yourself") from exc
    except subprocess.CalledProcessError as exc:
        raise ShoalError(f"cannot create OS user {name!r}: {exc.stderr.strip() or exc}",
                         f"create an unprivileged user named {name!r} yourself") from exc


def can_act_as(user: str) -> bool:
    """Whether this process can run commands as `user` (it is that user, or it is root)."""
    return is_root() or current_user() == user


def as_user_argv(user: str, argv: Sequence[str]) -> list[str]:
    """`argv` wrapped so that it runs as `user`."""
    if current_user() == user:
        return list(argv)
    if is_root():
        return ["runuser", "-u", user, "--", *argv]
    raise ShoalError(
        f"the servers of this cluster run as OS user {user!r}, but you are {current_user()!r}",
        f"run shoal as {user!r} or as root",
    )


def run_as(user: str, argv: Sequence[str], *, check: bool = True,
           cwd: str | os.PathLike[str] = "/") -> subprocess.CompletedProcess[str]:
    """Run `argv` as `user`, capturing its output as text.

    The working directory defaults to / because the caller's may be unreadable by the service user
    (e.g. under /root), which makes initdb and pg_ctl complain.
    """
    return subprocess.run(as_user_argv(user, argv), cwd=cwd, check=check, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)


def _user_ids(user: str) -> tuple[int, int, set[int]]:
    pw = pwd.getpwnam(user)
    groups = set(os.getgrouplist(user, pw.pw_gid))
    return pw.pw_uid, pw.pw_gid, groups


def _allowed(path: Path, user: str, bit: int) -> bool:
    """Whether `user` has permission `bit` (4=r, 2=w, 1=x) on `path`, from its mode bits.

    As root we cannot simply call os.access (root may do anything); the mode bits are what PostgreSQL,
    running as `user`, will meet. ACLs are not considered.
    """
    uid, _gid, groups = _user_ids(user)
    if uid == 0:
        return True
    st = path.stat()
    if st.st_uid == uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in groups:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def check_reachable(directory: Path, user: str) -> None:
    """Raise a ShoalError unless `user` can reach `directory`.

    `directory` need not exist yet: every existing ancestor must be searchable by the user, and the
    directory itself, if it exists, must be searchable and writable by it (or be empty, so that we may
    hand it over). Only meaningful when acting as root for another user.
    """
    directory = directory.absolute()
    hint = (f"PostgreSQL runs as OS user {user!r} because shoal was started as root; use a directory "
            f"that user can reach, e.g. --dir /var/lib/shoal/<name> or --dir /tmp/<name>")
    for ancestor in reversed(directory.parents):
        if not ancestor.exists():
            break
        if not _allowed(ancestor, user, 1):
            raise ShoalError(
                f"directory {directory} is not reachable by OS user {user!r}: "
                f"{ancestor} is not searchable by it", hint)
    if directory.exists() and not (_allowed(directory, user, 1) and _allowed(directory, user, 2)):
        if any(directory.iterdir()):
            raise ShoalError(f"directory {directory} is not writable by OS user {user!r}", hint)


def make_dir_for(directory: Path, user: str) -> None:
    """Create `directory` (and missing parents) and, when we are root, give it to `user`.

    Parents we create get mode 0755 whatever the umask, so that the service user can traverse them.
    """
    directory = directory.absolute()
    missing = [p for p in [directory, *directory.parents] if not p.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for created in missing:
            created.chmod(0o755)
        if is_root():
            uid, gid, _ = _user_ids(user)
            os.chown(directory, uid, gid)
    except OSError as exc:
        raise ShoalError(f"cannot create directory {directory}: {exc.strerror}",
                         "choose a --dir you may write to") from exc


def chown_to(path: Path, user: str) -> None:
    """Give a file we just wrote to `user` when we are root (so that user may manage it later)."""
    if is_root():
        uid, gid, _ = _user_ids(user)
        os.chown(path, uid, gid)


if __name__ == "__main__":
    # Used by the Makefile to learn which user runs the tests (creating it when needed).
    print(service_user())
