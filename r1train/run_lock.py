"""One run per run folder: an exclusive lock on `<run folder>/run.lock` for as long as a run lives.

Two runs writing into one folder interleave their metrics, double their samples and leave
whichever checkpoints and model wrote last, all while both report success. The lock is an
advisory `flock` on a file inside the folder: the kernel releases it when the holding process
ends, however it ends (kill -9 included), so a stale lock never blocks a resume. The file holds
the holder's process id, which the refused run names.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from r1train.errors import RunError

LOCK_FILE = "run.lock"


@contextlib.contextmanager
def hold_run_folder(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock for the duration of the block; raise RunError if another process holds it.

    `run_dir` must exist. The lock file is left in place (deleting it would let a third run lock a
    new file while the second still waits on the old one).
    """
    path = Path(run_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunError(
                f"{run_dir} is in use by another r1train run (process {holder}); wait for it to end, stop it, "
                "or give this run another run_name"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
