"""Checkpoints, run state and metric logs: atomic saves, what a crash leaves, RNG round trips,
signal handling, and logs that never hold a step twice."""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess

import pytest
import torch

from r1train import checkpoint
from r1train.checkpoint import clean_partial, latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from r1train.data import PromptSampler
from r1train.run_state import RunState, TrainingInterrupted
from r1train.tracking import RunLogger, read_metrics


def save(directory, step, value=0.0, keep=2):
    weights = {"w": torch.full((2, 2), value), "b": torch.zeros(3)}
    return save_checkpoint(directory, step, weights, {"optimizer": {"lr": 0.1}}, {"sampler": {"epoch": 0, "position": step}},
                           keep)


class Crash(Exception):
    pass


def test_save_and_load_round_trip_with_rng_states(tmp_path):
    random.seed(1)
    torch.manual_seed(1)
    path = save(tmp_path, 3, value=2.5)
    expected = (random.random(), torch.rand(3))
    random.seed(99)
    torch.manual_seed(99)

    weights, optimizer_state, trainer_state = load_checkpoint(path)

    assert path.name == "step-000003"
    assert torch.equal(weights["w"], torch.full((2, 2), 2.5))
    assert optimizer_state == {"optimizer": {"lr": 0.1}}
    assert trainer_state == {"step": 3, "sampler": {"epoch": 0, "position": 3}}
    assert random.random() == expected[0]  # the draws after the save come out again
    assert torch.equal(torch.rand(3), expected[1])


def test_tied_weights_are_saved_as_independent_copies(tmp_path):
    shared = torch.ones(4)
    path = save_checkpoint(tmp_path, 1, {"embed": shared, "head": shared}, {}, {}, keep=1)
    weights, _, _ = load_checkpoint(path)
    assert torch.equal(weights["embed"], weights["head"])


def test_only_tensors_that_share_memory_or_are_strided_are_copied_for_the_file():
    """A checkpoint copies no weight it can write as it is (a copy of every weight added their
    whole size to the run's peak memory at each checkpoint); views of one storage and strided
    tensors, which safetensors refuses, are copied."""
    from r1train.checkpoint import unshared

    weight, base = torch.randn(4, 3), torch.randn(6)
    written = unshared({"weight": weight, "transposed": weight.t(), "first": base[:3], "second": base[3:]})
    assert written["weight"].data_ptr() == weight.data_ptr()  # written from the learner's own memory
    assert written["first"].data_ptr() == base.data_ptr()
    assert written["second"].data_ptr() != base[3:].data_ptr() and torch.equal(written["second"], base[3:])
    assert written["transposed"].is_contiguous() and torch.equal(written["transposed"], weight.t())


def test_views_of_one_storage_are_saved_and_read_back(tmp_path):
    base = torch.arange(6.0)
    path = save_checkpoint(tmp_path, 1, {"first": base[:3], "second": base[3:], "strided": base[::2]}, {}, {}, keep=1)
    weights, _, _ = load_checkpoint(path)
    assert torch.equal(weights["first"], base[:3]) and torch.equal(weights["second"], base[3:])
    assert torch.equal(weights["strided"], base[::2])


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    for step in range(1, 5):
        save(tmp_path, step, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000003", "step-000004"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000003", "step-000004"]  # nothing else left


@pytest.mark.parametrize("crash_in", ["save_file", "_fsync_dir"])
def test_a_crash_while_writing_leaves_the_previous_checkpoint_usable(tmp_path, monkeypatch, crash_in):
    save(tmp_path, 1, value=1.0)

    def crash(*args, **kwargs):
        raise Crash

    monkeypatch.setattr(checkpoint, crash_in, crash)
    with pytest.raises(Crash):
        save(tmp_path, 2, value=2.0)
    monkeypatch.undo()

    assert latest_checkpoint(tmp_path).name == "step-000001"  # the half-written step 2 is ignored
    clean_partial(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000001"]
    weights, _, _ = load_checkpoint(latest_checkpoint(tmp_path))
    assert torch.equal(weights["w"], torch.full((2, 2), 1.0))


def test_a_folder_without_trainer_state_is_never_loaded(tmp_path):
    save(tmp_path, 1)
    (tmp_path / "step-000002").mkdir()
    (tmp_path / "step-000002" / "weights.safetensors").write_bytes(b"half")
    assert latest_checkpoint(tmp_path).name == "step-000001"


def test_a_crash_while_replacing_a_checkpoint_puts_the_old_one_back(tmp_path, monkeypatch):
    save(tmp_path, 1, value=1.0)
    real_replace = os.replace

    def replace(src, dst):
        if str(src).endswith(".tmp-step-000001"):  # the new copy is about to take the old one's place
            raise Crash
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    with pytest.raises(Crash):
        save(tmp_path, 1, value=9.0)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) is None  # the old one was moved aside...

    clean_partial(tmp_path)  # ...and a resume puts it back
    weights, _, _ = load_checkpoint(latest_checkpoint(tmp_path))
    assert torch.equal(weights["w"], torch.full((2, 2), 1.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000001"]


class FakeLearner:
    def __init__(self):
        self.weights = {"w": torch.zeros(2)}
        self.optimizer = {"steps": 0}

    def trainable_state(self):
        return self.weights

    def load_trainable_state(self, weights):
        self.weights = dict(weights)

    def state_dict(self):
        return dict(self.optimizer)

    def load_state_dict(self, state):
        self.optimizer = dict(state)


def test_run_state_restores_weights_optimiser_and_data_position(tmp_path):
    learner, sampler = FakeLearner(), PromptSampler([{"q": i} for i in range(5)], seed=0)
    state = RunState(tmp_path)
    assert state.restore(learner, sampler) == 0
    first = sampler.next_batch(3)
    learner.weights, learner.optimizer = {"w": torch.ones(2)}, {"steps": 1}
    state.save(1, learner, sampler, keep=2)
    expected_next = sampler.next_batch(4)  # crosses into the second epoch

    learner2, sampler2 = FakeLearner(), PromptSampler([{"q": i} for i in range(5)], seed=0)
    assert RunState(tmp_path).restore(learner2, sampler2) == 1
    assert torch.equal(learner2.weights["w"], torch.ones(2))
    assert learner2.optimizer == {"steps": 1}
    assert sampler2.next_batch(4) == expected_next
    assert first != expected_next[:3]


def test_a_background_checkpoint_keeps_the_rng_and_data_position_of_the_moment_it_was_saved(tmp_path):
    learner, sampler = FakeLearner(), PromptSampler([{"q": i} for i in range(5)], seed=0)
    state = RunState(tmp_path)
    learner.weights, learner.optimizer = {"w": torch.ones(2)}, {"steps": 1}
    random.seed(3)
    state.save(1, learner, sampler, keep=2, background=True)
    # The trainer goes on while the thread writes: it samples, which moves the RNGs and the data.
    expected_random, expected_torch = random.random(), torch.rand(3)
    expected_next = sampler.next_batch(4)
    state.wait_for_checkpoint()  # what the trainer calls before its next optimiser step
    state.close()

    learner2, sampler2 = FakeLearner(), PromptSampler([{"q": i} for i in range(5)], seed=0)
    assert RunState(tmp_path).restore(learner2, sampler2) == 1
    assert random.random() == expected_random and torch.equal(torch.rand(3), expected_torch)
    assert sampler2.next_batch(4) == expected_next
    assert torch.equal(learner2.weights["w"], torch.ones(2)) and learner2.optimizer == {"steps": 1}


def test_a_failed_background_checkpoint_stops_the_run_at_the_wait_and_close_reports_it(tmp_path, monkeypatch, capsys):
    learner, sampler = FakeLearner(), PromptSampler([{"q": 1}], seed=0)
    state = RunState(tmp_path)
    state.save(1, learner, sampler, keep=2)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    state.save(2, learner, sampler, keep=2, background=True)
    with pytest.raises(checkpoint.CheckpointWriteError, match="the disk is full.*step-000001"):
        state.wait_for_checkpoint()
    state.save(3, learner, sampler, keep=2, background=True)
    state.close()  # runs while another error may be on its way out: reports, does not raise
    err = capsys.readouterr().err
    assert "step-000003" in err and "the disk is full" in err
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000001"]


def test_a_checkpoint_that_does_not_fit_the_model_is_a_user_error(tmp_path):
    from r1train.errors import RunError

    class OtherModel(FakeLearner):
        def load_trainable_state(self, weights):
            raise ValueError("checkpoint lacks 4 trained parameters, e.g. lora_A")

    learner, sampler = FakeLearner(), PromptSampler([{"q": 1}], seed=0)
    RunState(tmp_path).save(1, learner, sampler, keep=1)
    with pytest.raises(RunError, match=r"step-000001 does not fit this recipe \(checkpoint lacks 4 .*--fresh"):
        RunState(tmp_path).restore(OtherModel(), sampler)


def test_a_signal_stops_between_steps_with_a_checkpoint_and_handlers_are_put_back(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    learner, sampler = FakeLearner(), PromptSampler([{"q": 1}], seed=0)
    state = RunState(tmp_path)
    assert signal.getsignal(signal.SIGTERM) is before  # building it changes nothing
    state.stop_if_interrupted(0, learner, sampler)  # the loop's first check installs the handlers
    assert signal.getsignal(signal.SIGTERM) is not before

    os.kill(os.getpid(), signal.SIGTERM)  # only sets a flag: this test goes on
    with pytest.raises(TrainingInterrupted, match=r"stopped by SIGTERM after step 3; checkpoint .*step-000003 kept\. "
                                                  r"Run the same command again to resume"):
        state.stop_if_interrupted(3, learner, sampler)
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-000003"
    # A checkpoint still being written when the signal is seen is finished, and named, first.
    state.save(4, learner, sampler, keep=2, background=True)
    with pytest.raises(TrainingInterrupted, match=r"after step 4; checkpoint .*step-000004 kept"):
        state.stop_if_interrupted(4, learner, sampler)
    state.close()
    assert signal.getsignal(signal.SIGTERM) is before


def test_resumed_logs_drop_rows_past_the_checkpoint_and_a_cut_short_line(tmp_path):
    rows = [{"step": s, "loss": s / 10} for s in (0, 1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "lo')

    logger = RunLogger(tmp_path, trackers=(), progress=False, start_step=2)
    logger.log(3, {"loss": 0.5})
    logger.close()

    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.5)]


def test_a_run_that_starts_over_starts_its_logs_over(tmp_path):
    # Killed during step 1 before any checkpoint: the evaluation row of step 0 is written again.
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "eval/accuracy": 0.1}\n{"step": 1}\n')
    (tmp_path / "samples.jsonl").write_text('{"step": 1, "completion": "x"}\n')
    logger = RunLogger(tmp_path, trackers=(), progress=False, start_step=0)
    logger.log(0, {"eval/accuracy": 0.1})
    logger.close()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0]
    assert read_metrics(tmp_path / "samples.jsonl") == []


def test_non_finite_metrics_are_logged_as_null(tmp_path):
    logger = RunLogger(tmp_path, trackers=(), progress=False)
    logger.log(1, {"loss": float("nan"), "grad_norm": torch.tensor(float("inf")), "nan_skipped_steps": 1})
    logger.close()
    row = read_metrics(tmp_path / "metrics.jsonl")[0]
    row.pop("time")
    assert row == {"step": 1, "loss": None, "grad_norm": None, "nan_skipped_steps": 1}


@pytest.fixture()
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root only): real ENOSPC from real writes."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)  # lazy: a failed write may hold a descriptor a moment


def save_sized(directory, step, floats):
    weights = {"w": torch.zeros(floats)}
    return save_checkpoint(directory, step, weights, {"optimizer": {"state": torch.zeros(floats)}}, {}, keep=2)


def test_a_full_disk_during_a_checkpoint_says_so_names_the_last_good_one_and_leaves_nothing_half_written(small_disk):
    save_sized(small_disk, 1, 10_000)  # 80 kB: fits
    with pytest.raises(checkpoint.CheckpointWriteError) as error:
        save_sized(small_disk, 2, 200_000)  # 1.6 MB: does not
    message = str(error.value)
    assert "the disk is full" in message and "\n" not in message
    assert f"the last good checkpoint is {small_disk / 'step-000001'}" in message
    assert sorted(p.name for p in small_disk.iterdir()) == ["step-000001"]  # no .tmp-step-000002 left
    load_checkpoint(latest_checkpoint(small_disk))


@pytest.mark.parametrize("fail_in", ["save_file", "_fsync_file"])
def test_a_disk_full_error_anywhere_in_the_write_is_reported_the_same_way(tmp_path, monkeypatch, fail_in):
    save(tmp_path, 1)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, fail_in, disk_full)
    with pytest.raises(checkpoint.CheckpointWriteError, match="the disk is full.*step-000001"):
        save(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000001"]
