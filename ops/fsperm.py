"""File modes of what the engine writes: private to its OS user.

Journals, venue records, algo logs, run records and risk state are trading records; nobody else
on the host may read them. The root of it is the umask: every ``gekko`` command sets 0o077 once
at its entry (``ops.cli.main``), so every file it and its workers create is 0600 and every
directory 0700, whoever creates it. ``tighten`` fixes a ``var/`` written before that (older
versions made 0644 / 0755), once at ``gekko run`` start.

One exception, under root only: pgserver runs PostgreSQL as the OS user ``pgserver`` (its uid
only: the gid stays root's), which must pass through ``var/`` to reach ``var/pg`` (``pg_ctl``
finds the server through it). ``var/`` is then 0711: anyone may pass through to a name they
know, nobody else may list it, and everything in it is still 0700 / 0600. (pgserver widens every
parent of the data directory to o+rx at each start: the one holding it is narrowed right after.)
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

PRIVATE_UMASK = 0o077


def tighten(root: Path, skip: Iterable[Path] = ()) -> int:
    """Remove group/other bits from ``root`` and everything under it (links are not followed;
    ``skip``ped directories — a database's own — are left alone). Returns how many changed."""
    skipped = {Path(p).resolve() for p in skip}
    changed = 0
    if not root.is_dir():
        return 0
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if (here / d).resolve() not in skipped]
        for p in [here, *(here / f for f in filenames)]:
            with contextlib.suppress(OSError):
                st = p.lstat()
                if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
                    continue
                if p == root and stat.S_IMODE(st.st_mode) & 0o077 == 0o011:
                    continue  # as allow_traverse leaves it
                os.chmod(p, stat.S_IMODE(st.st_mode) & ~0o077)
                changed += 1
    return changed


def allow_traverse(directory: Path, user: str | None) -> None:
    """Private ``directory`` that another OS ``user`` may pass through (0711, root only); else
    0700."""
    os.chmod(directory, 0o711 if user is not None and os.geteuid() == 0 else 0o700)
