"""Who may read the mail and the secrets under the home folder: the service account only.

Mailbox databases hold every message's header block, message files and the submission
queue hold whole messages, secrets/ the password hashes and the proxy secret, certs/ the
private keys. All of them must be 0600 files in 0700 folders. New files get that from the
umask every service and mailctl set (UMASK) and from explicit modes where they are created;
`secure()` repairs what an older version (or a hand copy) left open, at every service
start, and `too_open()` is what `mailctl get-service` reports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from server.settings.paths import Home

UMASK = 0o077  # group and others get nothing
OPEN_BITS = 0o077
#: Paths reported by name at most; the rest is counted.
REPORT_LIMIT = 20

log = logging.getLogger("mailctl")


def private_dir(path: Path) -> None:
    """mkdir -p where every folder made is 0700 whatever the umask (Path.mkdir gives the
    parents it makes the umask's mode)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
            os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask


def private_roots(home: Home) -> list[Path]:
    """Folders whose whole content is mail or secrets."""
    return [home.data, home.queue, home.secrets, home.certs]


def _walk(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every folder and file under root (root included), symlinks not followed. The bodies
    in a mailbox's msgs/ folder are created 0600 one by one (server.store.sqlite.files), so there only
    the folder itself is looked at: a start-up must not stat millions of files."""
    try:
        st = root.lstat()
    except FileNotFoundError:
        return
    yield root, st
    if not stat.S_ISDIR(st.st_mode) or root.name == "msgs":
        return
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            est = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path)
        elif stat.S_ISREG(est.st_mode):  # not links; sockets are guarded by their folder
            yield path, est


def _scan(home: Home, fix: bool) -> list[str]:
    found: list[str] = []
    for root in private_roots(home):
        for path, st in _walk(root):
            if not st.st_mode & OPEN_BITS:
                continue
            if fix:
                folder = stat.S_ISDIR(st.st_mode)
                mode = 0o700 if folder else (stat.S_IMODE(st.st_mode) & 0o700) or 0o600
                with contextlib.suppress(OSError):
                    os.chmod(path, mode)
                    continue
            found.append(_relative(home, path))
    return found


def _relative(home: Home, path: Path) -> str:
    try:
        return str(path.relative_to(home.root))
    except ValueError:
        return str(path)


def too_open(home: Home) -> list[str]:
    """Paths (relative to the home) of mail or secrets that group or others may read."""
    return _scan(home, fix=False)


def secure(home: Home) -> list[str]:
    """Make every such path owner-only; returns (and logs) those that could not be fixed
    (owned by another user, read-only file system)."""
    left = _scan(home, fix=True)
    if left:
        log.warning("event=file-modes too-open=%d paths=%s", len(left), summary(left))
    return left


def summary(paths: list[str]) -> str:
    shown = ", ".join(paths[:REPORT_LIMIT])
    more = len(paths) - REPORT_LIMIT
    return f"{shown} and {more} more" if more > 0 else shown
