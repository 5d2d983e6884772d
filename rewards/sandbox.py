"""Run untrusted Python programs in separate processes isolated by the operating system.

Each run is one `bwrap` (bubblewrap) sandbox around a Python interpreter whose first code is the
trusted harness (`rewards/code_harness.py`). What the sandbox gives a program:
- new user, pid, network, IPC, UTS and cgroup namespaces (`--unshare-all`): no network at all,
  no other process visible or reachable (killing its parent kills only its own sandbox);
- a file system built from nothing: `/usr` (and the interpreter's install prefix when it lives
  elsewhere) read-only, fresh `/proc` and `/dev`, and a private `/scratch` tmpfs of bounded size
  as the only writable place besides a bounded `/dev/shm` (HOME and TMPDIR point there); the project, the run folder, `/work`,
  `/root`, `/home`, `/tmp` and `/etc` are simply absent;
- an unprivileged user (run as nobody when the trainer is root, since root ignores the process
  limit) and, set by the harness before the program runs, hard limits on CPU time, address space,
  processes, file size and open files;
- a memory cap on the run as a whole (all its processes and its tmpfs files): its own memory
  cgroup where the machine lets the trainer make one (`rewards/sandbox_memory.py`), else each
  process's address space bounded by memory_mb / processes, so the run's sum stays within it;
- a wall-clock limit after which the whole process group is killed (bwrap's `--die-with-parent`
  takes the pid namespace, and with it every process of the program, down with it), and a cap on
  captured output beyond which the run is killed as well.
Programs of a batch run in parallel threads, up to `workers` sandboxes at a time.

`isolation="none"` runs the harness without bwrap (limits and wall clock only, in a temporary
folder): it exists for machines without bubblewrap, and only when a recipe asks for it by name.
"""
from __future__ import annotations

import functools
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from rewards import sandbox_memory

HARNESS_SOURCE = Path(__file__).with_name("code_harness.py").read_text()
INSTALL_HINT = (
    "install bubblewrap (`apt-get install -y bubblewrap`, or run ./scripts/setup.sh as root), "
    "or set the code reward's kwargs `sandbox: none` to run model-written code without isolation"
)
NOBODY = 65534  # the unprivileged uid and gid the sandbox runs as when the trainer is root
ISOLATIONS = ("bwrap", "none")
_RESULT_CAP_BYTES = 1 << 20


class SandboxUnavailable(ValueError):
    """The requested isolation cannot be used on this machine; the message is one line."""


MIN_PROCESS_MB = 32  # the sandbox's Python needs about 16 MiB of address space to start


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. `memory_mb` caps the run as a whole (every process and the files it writes
    to its tmpfs folders, see `Sandbox`); `output_kb` caps captured stdout; `file_mb` caps each
    file and each of the scratch folder and /dev/shm as a whole. Bad values raise ValueError."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 1024
    processes: int = 8
    file_mb: int = 16
    output_kb: int = 1024

    def __post_init__(self):
        for name, value in asdict(self).items():
            kinds = (int, float) if name == "wall_s" else (int,)
            if isinstance(value, bool) or not isinstance(value, kinds):
                wanted = "a number of seconds" if name == "wall_s" else "a whole number"
                raise ValueError(f"sandbox limit {name} must be {wanted}, got {value!r}")
            if not value > 0:
                raise ValueError(f"sandbox limit {name} must be positive, got {value}")
        if self.memory_mb < MIN_PROCESS_MB:
            raise ValueError(f"sandbox limit memory_mb must be at least {MIN_PROCESS_MB} (Python needs about 16 MiB "
                             f"to start), got {self.memory_mb}")


@dataclass
class RunResult:
    """What came back from one sandboxed run."""

    returncode: int | None  # None when killed by us (wall limit or output cap)
    stdout: bytes  # captured stdout (empty unless asked for), at most the output cap
    passed_tests: set[int]  # tests reported passed with the run's nonce (tests mode)
    timed_out: bool = False
    output_exceeded: bool = False


@functools.lru_cache(maxsize=None)
def check_isolation(isolation: str) -> None:
    """Raise SandboxUnavailable unless `isolation` works here (bwrap: installed and able to make
    its namespaces, probed once per process)."""
    if isolation not in ISOLATIONS:
        raise SandboxUnavailable(f"sandbox must be one of {list(ISOLATIONS)}, got {isolation!r}")
    if isolation == "none":
        return
    if bwrap_executable() is None:
        raise SandboxUnavailable(f"the code reward needs bubblewrap (bwrap), which is not installed: {INSTALL_HINT}")
    interpreter = sandbox_interpreter()
    probe = subprocess.run(_bwrap_prefix(1 << 20, interpreter) + [interpreter, "-I", "-c", "pass"],
                           capture_output=True, timeout=60, env=_sandbox_environment("/scratch"), **_user_arguments())
    if probe.returncode != 0:
        message = probe.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise SandboxUnavailable(f"bwrap is installed but cannot create its sandbox ({message[0]}): {INSTALL_HINT}")


def bwrap_executable() -> str | None:
    """bwrap's absolute path as the trainer's PATH finds it, or None. The sandboxed command is
    started with the programs' minimal PATH (/usr/bin:/bin), which would miss a bwrap installed
    in /usr/local/bin or ~/.local/bin, so the command names it by its full path."""
    return shutil.which("bwrap")


def sandbox_interpreter() -> str:
    """The Python that runs programs: the system's /usr/bin/python3 when there is one (it needs
    only the standard library, and lives where the sandbox can see it), else the interpreter
    behind the trainer's own (a virtual environment's base)."""
    if os.access("/usr/bin/python3", os.X_OK):
        return "/usr/bin/python3"
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


class Sandbox:
    """Runs programs under `limits`, isolated by `isolation` ("bwrap" or "none"), `workers` at once.

    The memory cap (`limits.memory_mb`) holds for each run as a whole. `memory_cap` says how:
    "cgroup" (the run's own memory cgroup; each process may also map up to memory_mb) or
    "address space" (no cgroup can be made here: each of the run's up to `processes` processes
    may map memory_mb / processes). Either way `workers` x memory_mb bounds the sandboxes
    together, which must fit in the machine's memory.
    """

    def __init__(self, isolation: str = "bwrap", limits: SandboxLimits | None = None, workers: int | None = None):
        check_isolation(isolation)
        self.isolation = isolation
        self.interpreter = sandbox_interpreter()
        self.limits = limits or SandboxLimits()
        self.user = _user_arguments() if isolation == "bwrap" else {}
        self.cgroups = sandbox_memory.find_memory_cgroups(self.user.get("user"))
        self.memory_cap = "cgroup" if self.cgroups is not None else "address space"
        if self.cgroups is not None:
            self.address_space_mb = self.limits.memory_mb
        else:
            self.address_space_mb = self.limits.memory_mb // self.limits.processes
            if self.address_space_mb < MIN_PROCESS_MB:
                raise ValueError(
                    f"without a memory cgroup (none can be made here) each of a run's {self.limits.processes} processes "
                    f"gets memory_mb / processes = {self.address_space_mb} MiB, under the {MIN_PROCESS_MB} MiB Python "
                    f"needs: raise memory_mb to at least {MIN_PROCESS_MB * self.limits.processes} or lower processes")
        machine_mb = _machine_memory_mb()
        if workers is None:
            # Most of a run is waiting on the kernel (namespaces), not CPU: more sandboxes than cores
            # pay; but all of them at their cap must leave half the machine's memory to the trainer.
            workers = max(1, min(4 * (os.cpu_count() or 1), machine_mb // 2 // self.limits.memory_mb))
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a whole number of at least 1, got {workers!r}")
        if workers * self.limits.memory_mb > machine_mb:
            raise ValueError(f"workers x memory_mb = {workers} x {self.limits.memory_mb} MiB is more than this "
                             f"machine's {machine_mb} MiB of memory: lower memory_mb or workers")
        self.workers = workers

    def run_tests(self, program: str, tests: list[str]) -> RunResult:
        """Run `program`, then each test statement; RunResult.passed_tests says which passed."""
        return self._run({"mode": "tests", "program": program, "tests": list(tests)}, stdin=b"", capture=False)

    def run_io(self, program: str, stdin: str) -> RunResult:
        """Run `program` with `stdin` as its input; RunResult.stdout is what it printed."""
        return self._run({"mode": "io", "program": program, "tests": []}, stdin=stdin.encode(), capture=True)

    def map(self, function, items: list) -> list:
        """function(item) for every item, on up to `workers` threads (each waits on one sandbox)."""
        if len(items) <= 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
            return list(pool.map(function, items))

    def _run(self, request: dict, stdin: bytes, capture: bool) -> RunResult:
        nonce = secrets.token_hex(16)
        limits = {**asdict(self.limits), "address_space_mb": self.address_space_mb}
        request = {**request, "nonce": nonce, "limits": limits}
        request_fd = _memory_file(json.dumps(request).encode())
        stdin_fd = _memory_file(stdin)
        result_read, result_write = os.pipe()
        info_read, info_write = os.pipe()  # bwrap reports the sandbox's first process here
        scratch = tempfile.mkdtemp(prefix="r1train-sandbox-") if self.isolation == "none" else None
        command = self._command(request_fd, result_write, info_write)
        cgroup = None
        try:
            if self.cgroups is not None:
                cgroup = self.cgroups.create(self.limits.memory_mb << 20)
                command = self.cgroups.enter_command(cgroup, command)
            process = subprocess.Popen(
                command, stdin=stdin_fd, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, pass_fds=(request_fd, result_write, info_write), start_new_session=True,
                cwd=scratch or "/", env=_sandbox_environment(scratch or "/scratch"), **self.user,
            )
        except BaseException:
            for leftover in (result_read, info_read):
                os.close(leftover)
            if cgroup is not None:
                self.cgroups.remove(cgroup)
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            raise
        finally:
            for descriptor in (request_fd, stdin_fd, result_write, info_write):
                os.close(descriptor)
        try:
            return self._collect(process, result_read, nonce)
        finally:
            _stop(process, info_read)
            os.close(result_read)
            if cgroup is not None:
                self.cgroups.remove(cgroup)
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)

    def _command(self, request_fd: int, result_fd: int, info_fd: int) -> list[str]:
        harness = [self.interpreter, "-I", "-c", HARNESS_SOURCE, str(request_fd), str(result_fd)]
        if self.isolation == "none":
            return harness
        return _bwrap_prefix(self.limits.file_mb << 20, self.interpreter) + ["--info-fd", str(info_fd)] + harness

    def _collect(self, process: subprocess.Popen, result_read: int, nonce: str) -> RunResult:
        deadline = time.monotonic() + self.limits.wall_s
        cap = self.limits.output_kb << 10
        streams = {result_read: bytearray()}
        if process.stdout is not None:
            streams[process.stdout.fileno()] = bytearray()
        open_streams = set(streams)
        timed_out = exceeded = False
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            readable, _, _ = select.select(list(open_streams), [], [], remaining)
            for descriptor in readable:
                chunk = os.read(descriptor, 65536)
                if not chunk:
                    open_streams.discard(descriptor)
                    continue
                streams[descriptor] += chunk
                limit = _RESULT_CAP_BYTES if descriptor == result_read else cap
                if len(streams[descriptor]) > limit:
                    exceeded = True
                    open_streams.clear()
                    break
        returncode = None
        if not (timed_out or exceeded):
            try:
                returncode = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        stdout = bytes(streams[process.stdout.fileno()][:cap]) if process.stdout is not None else b""
        return RunResult(returncode=returncode, stdout=stdout, passed_tests=_passed(streams[result_read], nonce),
                         timed_out=timed_out, output_exceeded=exceeded)


def _passed(report: bytes, nonce: str) -> set[int]:
    passed = set()
    for line in report.decode(errors="replace").splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == nonce and parts[2] == "pass" and parts[1].isdigit():
            passed.add(int(parts[1]))
    return passed


def _bwrap_prefix(scratch_bytes: int, interpreter: str) -> list[str]:
    """bwrap's arguments up to the command: namespaces and the file system."""
    command = [bwrap_executable() or "bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    command += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    command += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    command += ["--proc", "/proc", "--dev", "/dev"]
    prefix = str(Path(interpreter).parent.parent)  # e.g. pyenv's /root/.pyenv/versions/3.11.7
    if not prefix.startswith("/usr"):
        command += ["--ro-bind", prefix, prefix]
    command += ["--size", str(scratch_bytes), "--perms", "0700", "--tmpfs", "/scratch"]
    command += ["--size", str(scratch_bytes), "--tmpfs", "/dev/shm"]
    # bwrap builds the tree on an unbounded tmpfs: once built, the root and /dev become read-only
    # (a remount is per mount point, so /scratch and /dev/shm stay writable, and bounded).
    command += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/scratch"]
    return command


def _sandbox_environment(home: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}


def _user_arguments() -> dict:
    """Drop to nobody when we are root: root ignores RLIMIT_NPROC, nobody does not."""
    if os.geteuid() != 0:
        return {}
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []}


def _machine_memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20


def _memory_file(data: bytes) -> int:
    """A readable descriptor holding `data`, positioned at its start (never blocks a writer)."""
    descriptor = os.memfd_create("r1train-sandbox-input", 0)
    _write_all(descriptor, data)
    os.lseek(descriptor, 0, os.SEEK_SET)
    return descriptor


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view):]


def _stop(process: subprocess.Popen, info_read: int) -> None:
    """End the run and everything it started before returning.

    With bwrap, killing the sandbox's first process (pid 1 of its pid namespace) makes the kernel
    kill every process in the namespace and wait for them; bwrap outside then reaps it and exits.
    Killing bwrap itself first would leave that teardown to the machine's init, after we return.
    The process group is killed in any case (and is all there is with isolation "none").
    """
    info = b""
    if process.poll() is None:
        os.set_blocking(info_read, False)
        try:
            info = os.read(info_read, 4096)
        except BlockingIOError:
            pass
    os.close(info_read)
    try:
        sandbox_pid = int(json.loads(info.decode())["child-pid"]) if info else None
    except (ValueError, KeyError, TypeError):
        sandbox_pid = None
    if sandbox_pid is not None and process.poll() is None:  # still bwrap's unreaped child: no pid reuse
        try:
            os.kill(sandbox_pid, signal.SIGKILL)
            process.wait(timeout=10)
        except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
    if process.stdout is not None:
        process.stdout.close()
