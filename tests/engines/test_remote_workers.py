"""Remote rollout workers end to end: real `vllm serve` processes (CPU build) on 127.0.0.1, the remote
engine's generation, `r1train run` fed by them with weights pushed from disk, and the faults a user
meets (workers not up, a worker killed mid-run, a worker serving another model or a shorter context).
The NCCL push needs CUDA GPUs on both sides and is not exercised (see remote_weights.py).

The two workers are started once for the module by `r1train rollout-workers` itself (start-up takes
tens of seconds on CPU) and stopped by its SIGTERM handling at the end, which the fixture checks.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from r1train.cli import main
from r1train.engines import make_engine
from r1train.engines.base import SamplingSettings
from r1train.engines.sync_check import SYNC_WARN_MEAN_ABS_DIFF, compare_logprobs
from r1train.tracking import read_metrics

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed", allow_module_level=True)

pytestmark = pytest.mark.vllm

START_TIMEOUT_S = 300
WORKER_MAX_MODEL_LEN = 256  # shorter than the tiny model's context (512), so the workers' own limit is checked


def _free_ports(count: int) -> int:
    """A first port with `count` free ports after it (probed, not reserved)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + count < 65535 and all(_port_free(first + i) for i in range(count)):
            return first
    raise RuntimeError("no run of free ports found")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.fixture(scope="module")
def worker_urls(tiny_model_dir, tmp_path_factory):
    """Two workers from `r1train rollout-workers`; stopped with SIGTERM at the end, even on failure."""
    log_dir = tmp_path_factory.mktemp("rollout-workers")
    command = [sys.executable, "-m", "r1train.cli", "rollout-workers", "--model", str(tiny_model_dir), "--workers", "2",
               "--port", str(_free_ports(2)), "--max-model-len", str(WORKER_MAX_MODEL_LEN), "--kv-cache-gib", "0.25",
               "--log-dir", str(log_dir), "--timeout", str(START_TIMEOUT_S)]
    with open(log_dir / "cli.err", "w") as err:
        cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    try:
        line = cli.stdout.readline()  # blocks until the workers answer, or the command ends
        if not line.startswith("remote_urls:"):
            cli.wait(timeout=60)
            logs = "".join(p.read_text()[-2000:] for p in sorted(log_dir.glob("*.*")))
            pytest.fail(f"rollout-workers did not start (exit {cli.returncode}):\n{logs}")
        urls = json.loads(line.split(":", 1)[1])
        yield urls
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=60) == 0
        for url in urls:  # the workers are gone with it
            with pytest.raises(OSError):
                urllib.request.urlopen(url + "/health", timeout=5)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()


def test_generation_is_grouped_across_workers_with_learner_matching_logprobs(worker_urls, tiny_model_dir, tokenizer,
                                                                          chat_prompts, score):
    engine = make_engine("remote", None, None, tokenizer, remote_urls=worker_urls, seed=3, timeout_s=60,
                         weight_sync="disk")
    learner = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    engine.sync_weights(learner)  # whatever an earlier test left in the workers, they now hold these
    sampling = SamplingSettings(max_new_tokens=10, temperature=0.8, top_k=40)

    completions = engine.generate(chat_prompts, n=2, sampling=sampling)

    assert [c.prompt_index for c in completions] == [0, 0, 1, 1, 2, 2]
    assert [c.worker for c in completions] == [0, 0, 0, 0, 1, 1]  # whole groups per worker
    for c in completions:
        assert c.prompt_token_ids == chat_prompts[c.prompt_index]
        assert len(c.logprobs) == len(c.token_ids) == 10 and c.finish_reason == "length"
    reference = score(learner, completions, autocast_dtype=torch.bfloat16)
    assert compare_logprobs([c.logprobs for c in completions], reference)["mean_abs_diff"] < SYNC_WARN_MEAN_ABS_DIFF
    # CPU workers sample unseeded (vLLM's CPU build fails seeded requests whose prefill is split
    # over scheduler steps); CUDA workers get per-prompt seeds, so a repeated seed repeats samples.
    if engine.seeded:
        repeat = engine.generate(chat_prompts, n=2, sampling=SamplingSettings(max_new_tokens=10, temperature=0.8,
                                                                              top_k=40, seed=3))
        assert [c.token_ids for c in repeat] == [c.token_ids for c in completions]  # call 0 used seed 3
    engine.close()


def test_stop_strings_end_remote_completions_and_are_kept(worker_urls, tokenizer, chat_prompts):
    engine = make_engine("remote", None, None, tokenizer, remote_urls=worker_urls[:1], timeout_s=60)
    (free_run,) = engine.generate(chat_prompts[:1], n=1, sampling=SamplingSettings(max_new_tokens=10, temperature=0.0))
    stop = tokenizer.decode(free_run.token_ids[:4], skip_special_tokens=True)[-5:]
    assert stop.strip() and stop not in tokenizer.decode(free_run.token_ids[:3], skip_special_tokens=True)

    (stopped,) = engine.generate(chat_prompts[:1], n=1, sampling=SamplingSettings(max_new_tokens=10, temperature=0.0, stop=[stop]))

    assert stopped.token_ids == free_run.token_ids[:4]
    assert stopped.finish_reason == "stop" and stopped.text.endswith(stop)
    engine.close()


def write_remote_recipe(tmp_path: Path, model_dir, urls: list[str], **rollout) -> Path:
    rows = [{"question": f"What is {a} + {b}?", "answer": str(a + b)} for a in range(1, 5) for b in range(1, 4)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reward = tmp_path / "text_length.py"  # varies within every group: a random model gets advantages
    reward.write_text("def text_length(completions, **columns):\n    return [len(t) / 100 for t in completions]\n")
    recipe = {
        "run_name": "remote", "output_dir": str(tmp_path / "runs"), "seed": 0,
        "model": {"name": str(model_dir)},
        "data": {"train": str(train), "max_prompt_tokens": 200},
        "rollout": {"backend": "vllm", "placement": "remote", "remote_urls": urls, "weight_sync": "disk",
                    "group_size": 4, "prompts_per_step": 4, "max_new_tokens": 16, **rollout},
        "rewards": [{"path": str(reward), "function": "text_length"}],
        "training": {"steps": 3, "learning_rate": 1e-2, "checkpoint_every": 1, "bf16": False},
        "logging": {"tensorboard": False, "progress": False},
    }
    path = tmp_path / "remote.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_remote_run_trains_three_steps_with_both_workers_in_sync(tmp_path, tiny_model_dir, worker_urls):
    recipe = write_remote_recipe(tmp_path, tiny_model_dir, worker_urls, weight_sync_dir=str(tmp_path / "pushed"))

    assert main(["run", str(recipe)]) == 0

    rows = read_metrics(tmp_path / "runs" / "remote" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:  # every step checks the weights pushed after the step before (step 1: the start)
        for worker in (0, 1):  # both workers sampled, and each holds the learner's weights
            assert row[f"sync/worker{worker}/logprob_abs_diff_mean"] < SYNC_WARN_MEAN_ABS_DIFF, (row["step"], worker)
    assert not list((tmp_path / "pushed").iterdir())  # each push replaced the one before; the last went at the end


def test_remote_run_without_the_weight_push_fails_the_sync_bound(tmp_path, tiny_model_dir, worker_urls, monkeypatch):
    from r1train.engines.remote_weights import DiskWeightPush

    monkeypatch.setattr(DiskWeightPush, "push", lambda self, model: None)  # the workers keep what they had
    recipe = write_remote_recipe(tmp_path, tiny_model_dir, worker_urls)

    assert main(["run", str(recipe)]) == 0

    rows = read_metrics(tmp_path / "runs" / "remote" / "metrics.jsonl")
    assert all(rows[-1][f"sync/worker{w}/logprob_abs_diff_mean"] > SYNC_WARN_MEAN_ABS_DIFF for w in (0, 1))


def test_workers_not_up_end_in_one_line_naming_the_url(tmp_path, tiny_model_dir, capsys):
    url = f"http://127.0.0.1:{_free_ports(1)}"
    recipe = write_remote_recipe(tmp_path, tiny_model_dir, [url], remote_timeout_s=3)

    started = time.monotonic()
    assert main(["run", str(recipe)]) == 2

    assert time.monotonic() - started < 60
    err = capsys.readouterr().err
    assert "waiting for rollout workers: 0/1" in err  # the progress line
    last = err.strip().splitlines()[-1]
    assert last.startswith("r1train: error:") and url in last and "r1train rollout-workers" in last


def test_worker_with_another_model_a_shorter_context_or_no_cuda_for_nccl_is_refused(tmp_path, tiny_model_dir, worker_urls, capsys):
    other_model = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other_model)
    recipe = write_remote_recipe(tmp_path, other_model, worker_urls)
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert worker_urls[0] in err and f"--model {other_model}" in err

    recipe = write_remote_recipe(tmp_path, tiny_model_dir, worker_urls, max_new_tokens=100)  # 200 + 100 > 256
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert worker_urls[0] in err and f"at most {WORKER_MAX_MODEL_LEN} tokens" in err and "--max-model-len 300" in err

    if not torch.cuda.is_available():  # CPU workers take their weights from disk only
        recipe = write_remote_recipe(tmp_path, tiny_model_dir, worker_urls, weight_sync="nccl")
        assert main(["run", str(recipe)]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "weight_sync: nccl needs CUDA" in err and f"{worker_urls[0]}: cpu" in err


def test_worker_killed_mid_run_fails_the_step_then_resume_continues(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from r1train.grpo import GRPOTrainer
    from r1train.rollout_workers import WorkerPool

    pool = WorkerPool(str(tiny_model_dir), 1, port=_free_ports(1), max_model_len=WORKER_MAX_MODEL_LEN, kv_cache_gib=0.25,
                      log_dir=tmp_path / "worker-logs")
    try:
        pool.wait_until_healthy(START_TIMEOUT_S)
        recipe = write_remote_recipe(tmp_path, tiny_model_dir, pool.urls)
        step = GRPOTrainer.step

        def step_then_kill_after_the_first(trainer):
            result = step(trainer)
            if trainer.step_count == 1:
                os.killpg(pool.processes[0].pid, signal.SIGKILL)
                pool.processes[0].wait()
            return result

        monkeypatch.setattr(GRPOTrainer, "step", step_then_kill_after_the_first)
        started = time.monotonic()
        assert main(["run", str(recipe)]) == 2
        assert time.monotonic() - started < 120
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert pool.urls[0] in err and "--resume" in err
        run_dir = tmp_path / "runs" / "remote"
        assert (run_dir / "checkpoints" / "step-000001").is_dir()

        monkeypatch.setattr(GRPOTrainer, "step", step)
        pool.restart(0)
        assert main(["run", str(recipe), "--resume"]) == 0
        assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3]
    finally:
        pool.stop()
