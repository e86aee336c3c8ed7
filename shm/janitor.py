"""Command line of the janitor: ``python -m shm.janitor [--dry-run]``.

Removes ``/dev/shm`` segments of raygent rings whose owner process is dead, and prints their
names. The function behind it is ``shm.sweep_dead_segments`` (defined in ``shm._janitor``, so that
importing ``shm`` does not import this module and ``-m`` runs it cleanly).
"""

from __future__ import annotations

import argparse

from shm._janitor import sweep_dead_segments

__all__ = ["main", "sweep_dead_segments"]


def main(argv: list[str] | None = None) -> int:
    """Sweep, print what was removed (or would be, with ``--dry-run``), exit 0."""
    parser = argparse.ArgumentParser(prog="python -m shm.janitor", description=__doc__)
    parser.add_argument("--dry-run", action="store_true", help="list, do not remove")
    args = parser.parse_args(argv)
    for name in sweep_dead_segments(dry_run=args.dry_run):
        print(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
