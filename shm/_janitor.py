"""Remove ring segments whose owner process is dead (command line: ``python -m shm.janitor``).

A writer that is SIGKILLed (or exits through ``os._exit``) cannot unlink its segment, and tmpfs
keeps it -- in RAM -- until someone does. Segment names carry the owner pid
(``raygent-<pid>-<hex>``) and the header records the owner's start time and pid namespace, so a
sweep can tell a dead owner from a live one, and from a new process that reuses the pid. The
runtime runs a sweep at start; operators can run this module.

Only segments whose owner is certainly dead are removed: an owner in another pid namespace, or
a segment whose header cannot be read while its pid is alive, is left alone. Readers that still
have a removed segment mapped keep reading it; only new attaches fail.
"""

from __future__ import annotations

import logging
import os

from shm import _layout as L
from shm import _segment

__all__ = ["sweep_dead_segments"]

logger = logging.getLogger(__name__)


def _owner(shm_dir: str, name: str) -> tuple[int, int, int] | None:
    """Return (pid, start, pidns) of a segment's owner, from its header if readable, else from
    its name (start and pidns unknown); None if the name is not ours."""
    pid = _segment.owner_pid_from_name(name)
    if pid is None:
        return None
    try:
        with open(os.path.join(shm_dir, name), "rb") as f:
            static = f.read(L.STATIC.size)
    except OSError:
        return (pid, 0, 0)
    if len(static) == L.STATIC.size:
        fields = L.STATIC.unpack(static)
        magic, writer_pid, start, pidns = fields[0], fields[7], fields[8], fields[9]
        if magic == L.MAGIC and writer_pid == pid:
            return (pid, start, pidns)
    return (pid, 0, 0)  # half-made or foreign header: judge by the pid in the name


def sweep_dead_segments(dry_run: bool = False, shm_dir: str = L.SHM_DIR) -> list[str]:
    """Unlink every raygent segment in ``shm_dir`` whose owner process is dead.

    Args:
        dry_run: Only report what would be removed.
        shm_dir: Directory to scan (``/dev/shm``).

    Returns:
        Names of the segments removed (or that would be removed).

    Example:
        >>> from shm import sweep_dead_segments
        >>> removed = sweep_dead_segments()
    """
    removed: list[str] = []
    try:
        names = os.listdir(shm_dir)
    except FileNotFoundError:
        return removed
    for name in sorted(names):
        owner = _owner(shm_dir, name)
        if owner is None or _segment.is_alive(*owner):
            continue
        if not dry_run:
            try:
                os.unlink(os.path.join(shm_dir, name))
            except FileNotFoundError:
                continue  # another sweeper won
        removed.append(name)
        logger.info("removed ring segment %s of dead owner pid %d", name, owner[0])
    return removed
