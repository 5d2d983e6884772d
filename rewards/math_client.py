"""Ask the persistent Math-Verify process (`rewards/math_worker.py`) whether an answer equals a
reference, with a time limit per question.

The process starts on the first question (importing sympy and Math-Verify's grammar takes a few
seconds, which do not count against the per-question limit) and is reused after that. When a
question runs past its limit the process is killed, the answer is None, and a fresh process is
started at once in the background, so that it is usually ready by the next question.
A plain subprocess with a pipe is used rather than `multiprocessing`, because it also works inside
daemonic pool workers, which may not have multiprocessing children, and needs no picklable state.
A process that forks (a DataLoader worker, a multiprocessing pool) gets its own worker: an
after-fork hook makes the child forget its parent's process and pipe. POSIX only (select on pipes).
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 120.0  # generous: the machine may be busy; a slow start is not a hostile answer
_WORKER_SCRIPT = Path(__file__).with_name("math_worker.py")


class MathClient:
    """One worker process per client (and per OS process); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._owner_pid = os.getpid()
        self._buffer = b""
        self._ready = False
        self.restarts = 0  # how many times a worker was killed for running too long
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget_parent_worker)

    def _forget_parent_worker(self) -> None:
        """In a forked child: the worker and the lock state belong to the parent; start afresh."""
        self._lock = threading.Lock()
        self._process, self._buffer, self._ready = None, b"", False
        self._owner_pid = os.getpid()

    def equal(self, answer: str, reference: str, timeout_s: float) -> bool | None:
        """Whether Math-Verify finds the answer equal to the reference; None when it did not
        answer within `timeout_s` seconds or failed."""
        request = (json.dumps({"answer": answer, "reference": reference}) + "\n").encode()
        with self._lock:
            try:
                process = self._ensure_started()
                process.stdin.write(request)
                process.stdin.flush()
                line = self._read_line(process, timeout_s)
            except (OSError, ValueError, RuntimeError) as error:
                logger.warning("math worker failed (%s); restarting it", error)
                self._restart()
                return None
            if line is None:
                self.restarts += 1
                self._restart()
                return None
        reply = json.loads(line)
        return reply.get("equal")

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _ensure_started(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            self._restart()
        process = self._process
        if not self._ready:
            if self._read_line(process, STARTUP_TIMEOUT_S) != "ready":
                self._stop()
                raise RuntimeError("the math worker did not start (is math-verify installed?)")
            self._ready = True
        return process

    def _restart(self) -> None:
        """Stop the current worker and start the next one without waiting for it to load."""
        self._stop()
        self._process = subprocess.Popen(
            [sys.executable, str(_WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def _read_line(self, process: subprocess.Popen, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        descriptor = process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([descriptor], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(descriptor, 65536)
            if not chunk:
                raise RuntimeError("the math worker exited")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def _stop(self) -> None:
        process, self._process, self._buffer, self._ready = self._process, None, b"", False
        if process is None or self._owner_pid != os.getpid():
            return
        if process.poll() is None:
            process.kill()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass


_shared_client: MathClient | None = None
_shared_lock = threading.Lock()


def shared_client() -> MathClient:
    """The process-wide client that the built-in rewards use."""
    global _shared_client
    with _shared_lock:
        if _shared_client is None:
            _shared_client = MathClient()
            atexit.register(_shared_client.close)
        return _shared_client
