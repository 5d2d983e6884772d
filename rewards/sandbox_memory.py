"""A memory cap on a whole sandboxed run: one memory cgroup per run, made by the trainer.

Why a cgroup: the address-space limit (RLIMIT_AS) bounds each process on its own, so a run of
`processes` processes could hold `processes` x the limit, and `workers` runs go at once. A memory
cgroup charges every page the run's processes touch (heaps, stacks, and the files they write to
the sandbox's tmpfs folders) to one counter: past the limit the kernel reclaims what it can, then
kills a process of that cgroup only (the OOM killer confined to the run), so the run ends and
the trainer and the machine are untouched.

How a run enters its cgroup before any model-written code runs: its command starts as
`/bin/sh -c 'echo 0 > CGROUP/cgroup.procs && exec COMMAND'`, so the shell moves itself in and
everything it becomes (bwrap, the harness, the program and its children) is born inside. The
sandbox runs as nobody when the trainer is root; cgroup v1 lets a process move itself into a
cgroup whose `cgroup.procs` it may write, so that file (of this run's cgroup only) is given to
nobody. Inside bwrap `/sys` does not exist, so a program cannot see or leave its cgroup.

Support: the cgroup v1 memory controller with a writable hierarchy (root on these machines).
Under cgroup v2 moving a process needs write access to the common ancestor's `cgroup.procs`, which
nobody lacks, and a non-root user cannot make cgroups at all: there `find_memory_cgroups` returns
None, and the sandbox bounds each process's address space by memory_mb / processes instead.
"""
from __future__ import annotations

import functools
import os
import secrets
import subprocess
import time
from pathlib import Path

ENTER_SCRIPT = 'echo 0 > "$0" && exec "$@"'  # $0: the cgroup.procs file, "$@": the command
_REMOVE_WAIT_S = 5.0


class MemoryCgroups:
    """Makes, enters and removes per-run memory cgroups under `parent` (a cgroup v1 folder)."""

    def __init__(self, parent: Path, owner: int | None):
        self.parent = parent
        self.owner = owner  # uid and gid of the sandbox's processes (nobody), or None: the trainer's own

    def create(self, limit_bytes: int) -> Path:
        """A new cgroup holding at most `limit_bytes` of memory (and of memory plus swap)."""
        folder = self.parent / f"r1train-sandbox-{secrets.token_hex(6)}"
        folder.mkdir()
        try:
            (folder / "memory.limit_in_bytes").write_text(str(limit_bytes))
            if (folder / "memory.memsw.limit_in_bytes").exists():  # only where swap accounting is on
                (folder / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
            if self.owner is not None:
                os.chown(folder / "cgroup.procs", self.owner, self.owner)
        except OSError:
            self.remove(folder)
            raise
        return folder

    @staticmethod
    def enter_command(folder: Path, command: list[str]) -> list[str]:
        """`command`, started inside the cgroup `folder` (it never starts when the move fails)."""
        return ["/bin/sh", "-c", ENTER_SCRIPT, str(folder / "cgroup.procs")] + command

    @staticmethod
    def remove(folder: Path) -> None:
        """Remove a run's cgroup once its processes are gone (the kernel may still be freeing
        them for a moment after the run is reaped, which rmdir answers with EBUSY)."""
        deadline = time.monotonic() + _REMOVE_WAIT_S
        while True:
            try:
                folder.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return  # left behind, empty soon; the kernel frees an empty cgroup's memory
                time.sleep(0.01)


@functools.lru_cache(maxsize=None)
def find_memory_cgroups(owner: int | None) -> MemoryCgroups | None:
    """Per-run memory cgroups under this process's own memory cgroup, when they work here: probed
    once per process by making one, entering it as `owner` and reading the limit back; else None."""
    parent = _own_memory_cgroup()
    if parent is None:
        return None
    cgroups = MemoryCgroups(parent, owner)
    try:
        folder = cgroups.create(64 << 20)
    except OSError:
        return None
    try:
        user = {"user": owner, "group": owner, "extra_groups": []} if owner is not None else {}
        probe = subprocess.run(cgroups.enter_command(folder, ["/bin/cat", "/proc/self/cgroup"]),
                               capture_output=True, text=True, timeout=30, cwd="/", **user)
        limit = int((folder / "memory.limit_in_bytes").read_text())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    finally:
        cgroups.remove(folder)
    entered = probe.returncode == 0 and any(
        line.endswith("/" + folder.name) for line in probe.stdout.splitlines() if ":memory" in line)
    return cgroups if entered and limit == 64 << 20 else None


def _own_memory_cgroup() -> Path | None:
    """The folder of this process's cgroup in a mounted v1 memory hierarchy, if any."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        memberships = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    mount_point = None
    for line in mounts:
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "cgroup" and "memory" in fields[3].split(","):
            mount_point = fields[1]
    if mount_point is None:
        return None
    for line in memberships:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            folder = Path(mount_point + path.rstrip("/"))
            return folder if (folder / "memory.limit_in_bytes").exists() else None
    return None
