"""Exact resume: a tiny GRPO run killed with SIGKILL at several points, then resumed with the same
command, ends with the same parameters as an uninterrupted run and one metrics row per step; a run
stopped by SIGTERM checkpoints its last finished step and says how to resume; non-finite losses
skip their step and, repeated, stop the run.

The killed runs are child processes. A small launcher (written by the test, not part of r1train)
imports r1train once and forks one child per run; the child wraps one function with a SIGKILL on
its Nth call and runs `r1train.cli.main(["run", RECIPE])`, so each kill lands at a chosen point: in
the middle of sampling, inside the optimiser step, halfway through writing a checkpoint. Forking
saves the seconds a fresh interpreter spends importing torch and transformers; the launcher has
run no torch computation, which keeps forking safe. Everything runs in fp32 on one thread, where
CPU kernels are deterministic, so "the same" means bit for bit.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from r1train.checkpoint import list_checkpoints, load_checkpoint
from r1train.cli import main
from r1train.tracking import read_metrics

STEPS = 4

LAUNCHER = '''
"""Import r1train once, then fork one `r1train run` per request line read from stdin.

A request is a JSON list [where, nth, recipe, log]: the child arms a SIGKILL at the nth call of
the function `where` names ("nowhere": no kill), writes its output to the file `log` and runs
`r1train.cli.main(["run", recipe])`. Each request is answered with one JSON line {"pid", "code"}
once the child has ended; code is minus the signal number for a child killed by a signal.
"""
import json
import os
import signal
import sys

import torch

# Everything a run imports, imported once before forking.
import datasets  # noqa: F401
import peft  # noqa: F401
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM  # noqa: F401

from r1train import checkpoint, cli, grpo, pipeline, report, validation  # noqa: F401
from r1train.engines import hf


def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def on_nth_call(owner, name, nth, action):
    """Replace owner.name by a wrapper that calls action(original, *args) on the nth call."""
    original = getattr(owner, name)
    calls = 0

    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == nth:
            return action(original, *args, **kwargs)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def die_at_third_token(original, *args, **kwargs):
    on_nth_call(hf._GatherSampledLogprobs, "__call__", 3, lambda original, *a, **k: die())
    return original(*args, **kwargs)


def write_then_die(original, *args, **kwargs):
    original(*args, **kwargs)
    die()


def arm(where, nth):
    if where == "generation":  # the nth generate() call dies after sampling two tokens
        on_nth_call(hf.HFEngine, "generate", nth, die_at_third_token)
    elif where == "optimiser":  # the nth AdamW step dies before updating anything
        on_nth_call(torch.optim.AdamW, "step", nth, lambda original, *a, **k: die())
    elif where == "checkpoint":  # the nth checkpoint dies after writing its weights file
        on_nth_call(checkpoint, "save_file", nth, write_then_die)
    elif where != "nowhere":
        raise SystemExit(f"unknown kill point {where}")


for line in sys.stdin:
    where, nth, recipe, log = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            output = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(output, 1)
            os.dup2(output, 2)
            arm(where, nth)
            code = cli.main(["run", recipe])
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"pid": pid, "code": os.waitstatus_to_exitcode(status)}), flush=True)
'''


class Launcher:
    """The test's side of the launcher: start a run, wait for its end."""

    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "launcher.py").write_text(LAUNCHER)
        self.process = subprocess.Popen([sys.executable, "launcher.py"], cwd=folder, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)

    def start(self, recipe: Path, where: str = "nowhere", nth: int = 0) -> Path:
        """Start `r1train run recipe` in a child; returns the file that receives its output."""
        log = recipe.parent / f"run-{where}-{nth}-{time.monotonic_ns()}.log"
        self.process.stdin.write(json.dumps([where, nth, str(recipe), str(log)]) + "\n")
        self.process.stdin.flush()
        return log

    def wait(self, timeout: float = 120) -> int:
        """The exit code of the child started last (minus the signal number if killed)."""
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        assert ready, f"no run ended within {timeout} s"
        return json.loads(self.process.stdout.readline())["code"]

    def run(self, recipe: Path, where: str = "nowhere", nth: int = 0) -> tuple[int, str]:
        log = self.start(recipe, where, nth)
        return self.wait(), log.read_text()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    launcher = Launcher(tmp_path_factory.mktemp("launcher"))
    yield launcher
    launcher.close()


# Waits at its second call (step 2) until the test has sent SIGTERM, so the signal lands mid-step.
SIGTERM_REWARD = '''
import os
import time
from pathlib import Path

HERE = Path(__file__).parent
calls = 0


def text_length(completions, **columns):
    global calls
    calls += 1
    if calls == 2 and not (HERE / "go").exists():
        (HERE / "ready").write_text(str(os.getpid()))
        deadline = time.monotonic() + 20
        while not (HERE / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return [len(t) / 100 for t in completions]
'''

LENGTH_REWARD = "def text_length(completions, **columns):\n    return [len(t) / 100 for t in completions]\n"


def write_run_files(tmp_path: Path, model_dir: Path, reward_source: str, steps: int) -> Path:
    rows = [{"question": f"What is {a} + {b}?", "answer": str(a + b)} for a in range(1, 5) for b in range(1, 4)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "reward.py").write_text(reward_source)
    recipe = {
        "run_name": "tiny", "output_dir": str(tmp_path / "runs"), "seed": 0,
        "model": {"name": str(model_dir)},
        "data": {"train": str(tmp_path / "train.jsonl"), "max_prompt_tokens": 200},
        "rollout": {"backend": "hf", "group_size": 4, "prompts_per_step": 2, "max_new_tokens": 8},
        "rewards": [{"path": str(tmp_path / "reward.py"), "function": "text_length"}],
        # fp32 on one thread: CPU kernels are then deterministic, so resumed == uninterrupted exactly.
        "training": {"steps": steps, "learning_rate": 1e-3, "checkpoint_every": 1, "bf16": False, "threads": 1},
        "logging": {"tensorboard": False, "progress": False},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def checkpoint_steps(run_dir: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in list_checkpoints(run_dir / "checkpoints")]


def deterministic(row: dict) -> dict:
    """A metrics row without wall-clock figures."""
    return {k: v for k, v in row.items() if k != "time" and not k.startswith(("time/", "throughput/"))}


@pytest.fixture()
def one_thread():
    """Runs in this process set torch's thread count from the recipe; put it back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_killed_runs_resume_to_exactly_the_uninterrupted_result(tmp_path, tiny_model_dir, launcher):
    recipe_path = write_run_files(tmp_path, tiny_model_dir, LENGTH_REWARD, STEPS)
    run_dir = tmp_path / "runs" / "tiny"
    reference_path = tmp_path / "reference.yaml"
    reference_path.write_text(recipe_path.read_text().replace(str(tmp_path / "runs"), str(tmp_path / "reference")))
    reference_dir = tmp_path / "reference" / "tiny"

    code, output = launcher.run(reference_path)  # uninterrupted
    assert code == 0, output

    # 1. Killed while sampling step 2 (checkpoint 1 on disk).
    code, output = launcher.run(recipe_path, "generation", 2)
    assert code == -signal.SIGKILL, output
    assert checkpoint_steps(run_dir) == [1]
    # 2. Resumed from step 1, killed inside the optimiser step of step 3 (its 2nd).
    code, output = launcher.run(recipe_path, "optimiser", 2)
    assert code == -signal.SIGKILL, output
    assert "resuming" in output and "from step 1" in output
    assert checkpoint_steps(run_dir) == [1, 2]
    # 3. Resumed from step 2, killed while writing checkpoint 3: its row is logged, its folder half-made.
    code, output = launcher.run(recipe_path, "checkpoint", 1)
    assert code == -signal.SIGKILL, output
    assert checkpoint_steps(run_dir) == [1, 2]
    assert (run_dir / "checkpoints" / ".tmp-step-000003" / "weights.safetensors").is_file()
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3]
    # 4. The same command, not killed this time, finishes the run from checkpoint 2.
    code, output = launcher.run(recipe_path)
    assert code == 0, output
    assert "from step 2" in output

    expected = load_file(str(reference_dir / "model" / "model.safetensors"))
    resumed = load_file(str(run_dir / "model" / "model.safetensors"))
    assert expected.keys() == resumed.keys()
    different = [name for name in expected if not torch.equal(expected[name], resumed[name])]
    assert not different, f"resumed parameters differ from the uninterrupted run: {different}"

    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # one row per step, none twice
    assert [deterministic(r) for r in rows] == [deterministic(r) for r in read_metrics(reference_dir / "metrics.jsonl")]
    assert read_metrics(run_dir / "samples.jsonl") == read_metrics(reference_dir / "samples.jsonl")
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))  # the half-made checkpoint was cleaned up


def test_sigterm_checkpoints_the_finished_step_and_says_how_to_resume(tmp_path, tiny_model_dir, launcher):
    recipe_path = write_run_files(tmp_path, tiny_model_dir, SIGTERM_REWARD, steps=3)
    run_dir = tmp_path / "runs" / "tiny"
    log = launcher.start(recipe_path)
    deadline = time.monotonic() + 90
    while not (tmp_path / "ready").exists():  # step 2 is scoring its rollouts
        assert time.monotonic() < deadline, "the run never reached step 2"
        time.sleep(0.05)
    os.kill(int((tmp_path / "ready").read_text()), signal.SIGTERM)
    (tmp_path / "go").write_text("")
    code = launcher.wait()
    output = log.read_text()

    assert code != 0, output
    assert "stopped by SIGTERM after step 2" in output
    assert "Run the same command again to resume" in output
    assert checkpoint_steps(run_dir) == [1, 2]  # step 2 finished and was kept
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]
    assert not (run_dir / "model").exists()

    code, output = launcher.run(recipe_path)  # the same command again
    assert code == 0, output
    assert "from step 2" in output
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3]
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert (run_dir / "DONE.json").is_file()


def test_non_finite_steps_are_skipped_counted_and_stop_the_run_when_repeated(tmp_path, tiny_model_dir, monkeypatch,
                                                                           capsys, one_thread):
    from r1train import learner as learner_module

    recipe_path = write_run_files(tmp_path, tiny_model_dir, LENGTH_REWARD, steps=6)
    run_dir = tmp_path / "runs" / "tiny"
    # The loss of batches 2, 4 and 5 is NaN: step 2 is skipped and the run recovers; 4 and 5 are
    # two in a row, which is training.max_nan_steps, so the run stops there.
    poisoned = {2, 4, 5}
    batches = 0
    real_train_on_batch = learner_module.PolicyLearner.train_on_batch
    real_loss = learner_module.compute_policy_loss

    def train_on_batch(self, batch, settings):
        nonlocal batches
        batches += 1
        return real_train_on_batch(self, batch, settings)

    def loss_of_poisoned_batches(*args, **kwargs):
        loss, metrics = real_loss(*args, **kwargs)
        return (loss * float("nan") if batches in poisoned else loss), metrics

    monkeypatch.setattr(learner_module.PolicyLearner, "train_on_batch", train_on_batch)
    monkeypatch.setattr(learner_module, "compute_policy_loss", loss_of_poisoned_batches)

    code = main(["run", str(recipe_path), "--set", "training.max_nan_steps=2", "--set", "training.keep_checkpoints=10"])

    assert code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "2 consecutive steps with a non-finite loss or gradient" in message
    assert f"the last good checkpoint kept is {run_dir / 'checkpoints' / 'step-000004'}" in message
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # step 5 stopped the run before it was logged
    assert [r["nan_skipped_steps"] for r in rows] == [0, 1, 0, 1]
    assert checkpoint_steps(run_dir) == [1, 2, 3, 4]
    weights = {step: load_checkpoint(run_dir / "checkpoints" / f"step-{step:06d}")[0] for step in (1, 2, 3, 4)}
    for name in weights[1]:  # a skipped step changes nothing, a good one does
        assert torch.equal(weights[1][name], weights[2][name]) and torch.equal(weights[3][name], weights[4][name])
    assert any(not torch.equal(weights[2][name], weights[3][name]) for name in weights[2])
    assert not (run_dir / "model").exists()


def wait_for_ready(tmp_path: Path) -> int:
    """The process id the SIGTERM reward wrote once step 2 is scoring its rollouts."""
    deadline = time.monotonic() + 90
    while not (tmp_path / "ready").exists():
        assert time.monotonic() < deadline, "the run never reached step 2"
        time.sleep(0.05)
    time.sleep(0.05)  # the file is written in one call; give it a moment to be complete
    return int((tmp_path / "ready").read_text())


def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_first(tmp_path, tiny_model_dir, launcher, capsys):
    recipe_path = write_run_files(tmp_path, tiny_model_dir, SIGTERM_REWARD, steps=2)
    run_dir = tmp_path / "runs" / "tiny"
    log = launcher.start(recipe_path)
    holder = wait_for_ready(tmp_path)  # the first run is inside step 2
    capsys.readouterr()

    assert main(["run", str(recipe_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("r1train: error: ") and len(err.splitlines()) == 1, err
    assert f"in use by another r1train run (process {holder})" in err
    assert main(["run", str(recipe_path), "--fresh"]) == 2  # --fresh deletes nothing of a run in use
    assert (run_dir / "checkpoints").is_dir()

    (tmp_path / "go").write_text("")
    assert launcher.wait() == 0, log.read_text()
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]  # one writer only
    capsys.readouterr()
    assert main(["run", str(recipe_path)]) == 0  # the lock went with the process that held it
    assert "already finished" in capsys.readouterr().out


def test_sigterm_during_the_last_step_stops_the_run_and_resuming_finishes_it(tmp_path, tiny_model_dir, launcher):
    recipe_path = write_run_files(tmp_path, tiny_model_dir, SIGTERM_REWARD, steps=2)
    recipe = yaml.safe_load(recipe_path.read_text())
    recipe["data"]["eval"] = recipe["data"]["train"]
    recipe["evaluation"] = {"max_examples": 2, "greedy": False}
    recipe_path.write_text(yaml.safe_dump(recipe))
    run_dir = tmp_path / "runs" / "tiny"
    log = launcher.start(recipe_path)
    os.kill(wait_for_ready(tmp_path), signal.SIGTERM)  # step 2 of 2 is scoring its rollouts
    (tmp_path / "go").write_text("")
    code = launcher.wait()
    output = log.read_text()

    assert code == 130, output
    assert "stopped by SIGTERM after step 2" in output
    assert checkpoint_steps(run_dir) == [1, 2]
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert not any(k.startswith("eval/") for k in rows[-1])  # the final evaluation did not run
    assert not (run_dir / "model").exists() and not (run_dir / "DONE.json").exists()

    code, output = launcher.run(recipe_path)  # the same command again: no step left, evaluate and save
    assert code == 0, output
    assert "from step 2" in output
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 2] and "eval/accuracy" in rows[-1]
    assert (run_dir / "model" / "model.safetensors").is_file() and (run_dir / "DONE.json").is_file()
