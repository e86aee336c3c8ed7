"""POSIX shared-memory segments opened by hand, and process identity for liveness checks.

Why not ``multiprocessing.shared_memory``: on Python 3.11 every ``SharedMemory(name=...)``
*attach* registers the name with the process's ``resource_tracker``, which unlinks it when that
process exits (CPython issue 82300) -- a reader that merely attached would destroy the writer's
ring. Unregistering afterwards is racy and differs between versions. Instead this module opens
``/dev/shm/<name>`` with ``os.open`` and maps it with ``mmap``: no tracker is involved anywhere,
so only an explicit ``unlink`` (done by the creator, or by the janitor for a dead creator)
removes a segment. This is the boundary where ``OSError`` becomes a ``shm`` error.

Liveness: a process is identified by (pid, start time, pid namespace). ``os.kill(pid, 0)`` alone
is fooled by zombies (a SIGKILLed child that was not reaped yet still "exists") and by pid reuse;
the start time in ``/proc/<pid>/stat`` settles both. A pid from another pid namespace cannot be
judged, so such processes count as alive (never evicted, never declared dead).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import secrets
from dataclasses import dataclass

from shm import _layout as L
from shm.errors import SegmentError, SegmentNoSpace

# MAP_POPULATE maps every page at mmap time: no first-touch page faults later, in the middle
# of a write or a read (a 64 MiB ring costs a few ms once, at create/attach).
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


@dataclass(frozen=True)
class ProcessId:
    """Who a process is, precisely enough to tell it from a later process with the same pid.

    Attributes:
        pid: Process id.
        start: Start time in clock ticks since boot (0 if ``/proc`` is unavailable).
        pidns: Inode of the pid namespace (0 if unknown).
    """

    pid: int
    start: int
    pidns: int


def _stat_fields(pid: int) -> list[str] | None:
    """Return the fields of ``/proc/<pid>/stat`` after the command name, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return []
    # The command name may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(b")") + 2 :].decode("ascii", "replace").split()


def _own_pidns() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def current_process() -> ProcessId:
    """Return the identity of the calling process (re-read after fork)."""
    pid = os.getpid()
    fields = _stat_fields(pid) or []
    # fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
    start = int(fields[19]) if len(fields) > 19 else 0
    return ProcessId(pid, start, _own_pidns())


def is_alive(pid: int, start: int, pidns: int) -> bool:
    """Tell whether the process (pid, start, pidns) is still running.

    Args:
        pid: Process id; 0 or negative counts as dead.
        start: Start time recorded when the process registered (0 = unknown, not compared).
        pidns: Pid namespace inode recorded at registration (0 = unknown).

    Returns:
        False only when the process is certainly gone (no such pid, a zombie, or a different
        process reusing the pid); True otherwise, including when it cannot be judged because it
        lives in another pid namespace.
    """
    if pid <= 0:
        return False
    own_ns = _own_pidns()
    if pidns and own_ns and pidns != own_ns:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    fields = _stat_fields(pid)
    if fields is None:
        return False
    if not fields:
        return True  # /proc unreadable: trust os.kill
    if fields[0] in ("Z", "X"):
        return False
    return not (start and len(fields) > 19 and int(fields[19]) != start)


def boot_id() -> str:
    """Return this machine's boot id: segments are only meaningful on the node that made them."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def new_name(pid: int) -> str:
    """Return a fresh segment name carrying the owner pid, for the janitor."""
    return f"{L.NAME_PREFIX}{pid}-{secrets.token_hex(6)}"


def owner_pid_from_name(name: str) -> int | None:
    """Return the owner pid encoded in a segment name, or None if it is not a raygent name."""
    if not name.startswith(L.NAME_PREFIX):
        return None
    pid_text = name[len(L.NAME_PREFIX) :].split("-", 1)[0]
    return int(pid_text) if pid_text.isdigit() else None


def free_bytes() -> int:
    """Return the bytes an unprivileged process can still allocate in ``/dev/shm``."""
    st = os.statvfs(L.SHM_DIR)
    return st.f_bavail * st.f_frsize


def create(name: str, size: int) -> tuple[int, mmap.mmap]:
    """Create, reserve and map a new segment.

    The whole size is reserved with ``posix_fallocate`` so that a tmpfs without room fails here
    with :class:`SegmentNoSpace` instead of killing a process with SIGBUS on a later store. A
    ``statvfs`` check runs first so that an impossible request fails before tmpfs starts
    allocating pages it will have to give back.

    Args:
        name: Segment name (file name under ``/dev/shm``).
        size: Total bytes (header region + data region).

    Returns:
        The open file descriptor (kept for ``flock``) and the shared mapping.

    Raises:
        SegmentNoSpace: ``/dev/shm`` cannot hold ``size`` bytes.
        SegmentError: Any other operating-system failure.
    """
    path = L.segment_path(name)
    available = free_bytes()
    if size > available:
        raise SegmentNoSpace(
            f"ring segment needs {size} bytes but {L.SHM_DIR} has {available} free; "
            f"lower capacity_bytes or enlarge {L.SHM_DIR}"
        )
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SegmentError(f"cannot create {path}: {exc}") from exc
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.ENOMEM):
                raise SegmentNoSpace(
                    f"cannot reserve {size} bytes in {L.SHM_DIR} ({exc.strerror}); "
                    f"lower capacity_bytes or enlarge {L.SHM_DIR}"
                ) from exc
            raise SegmentError(f"cannot reserve {size} bytes for {path}: {exc}") from exc
        try:
            mapping = mmap.mmap(fd, size, _MAP_FLAGS, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            raise SegmentError(f"cannot map {path}: {exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
        raise
    return fd, mapping


def open_existing(name: str) -> tuple[int, mmap.mmap]:
    """Open and map an existing segment read-write, without any resource tracker.

    Args:
        name: Segment name.

    Returns:
        The open file descriptor and the shared mapping of the whole file.

    Raises:
        SegmentError: The segment does not exist (unlinked, or made on another node) or
            cannot be mapped.
    """
    path = L.segment_path(name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise SegmentError(
            f"no ring segment {path}: its writer unlinked it, or the handle comes from another node"
        ) from exc
    except OSError as exc:
        raise SegmentError(f"cannot open {path}: {exc}") from exc
    try:
        size = os.fstat(fd).st_size
        if size < L.PAGE_SIZE:
            raise SegmentError(f"{path} is {size} bytes, too small to be a ring segment")
        mapping = mmap.mmap(fd, size, _MAP_FLAGS, mmap.PROT_READ | mmap.PROT_WRITE)
    except OSError as exc:
        os.close(fd)
        raise SegmentError(f"cannot map {path}: {exc}") from exc
    except BaseException:
        os.close(fd)
        raise
    return fd, mapping


def unlink(name: str) -> bool:
    """Remove a segment name; return False if it was already gone."""
    try:
        os.unlink(L.segment_path(name))
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def locked(fd: int):
    """Hold an exclusive ``flock`` on the segment: serialises slot claims and evictions.

    The kernel drops the lock when its holder dies, so a crash inside never wedges the ring.
    """
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
