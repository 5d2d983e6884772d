"""compare_logprobs and the bf16 warning bound."""
from __future__ import annotations

import pytest
import torch

from r1train.engines.sync_check import SYNC_WARN_MEAN_ABS_DIFF, compare_logprobs, sync_check_metrics, sync_warning


def test_ragged_lists_are_compared_token_by_token():
    engine = [[-1.0, -2.0], [-0.5]]
    learner = [[-1.1, -2.0], [-0.2]]
    stats = compare_logprobs(engine, learner)
    assert stats["mean_abs_diff"] == pytest.approx((0.1 + 0.0 + 0.3) / 3)
    assert stats["max_abs_diff"] == pytest.approx(0.3)


def test_a_padded_learner_tensor_is_cut_to_each_completions_length():
    engine = [torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-0.5])]
    learner = torch.tensor([[-1.0, -2.5, -3.0], [-0.25, 0.0, 0.0]])  # row 2 padded with zeros
    stats = compare_logprobs(engine, learner)
    assert stats["mean_abs_diff"] == pytest.approx((0.5 + 0.25) / 4)
    assert stats["max_abs_diff"] == pytest.approx(0.5)


def test_two_tensors_are_compared_under_the_mask():
    engine = torch.tensor([[-1.0, -9.0], [-2.0, -2.0]])
    learner = torch.tensor([[-1.5, 0.0], [-2.0, -1.0]])
    mask = torch.tensor([[1, 0], [1, 1]])
    stats = compare_logprobs(engine, learner, mask)
    assert stats["mean_abs_diff"] == pytest.approx(1.5 / 3)
    assert stats["max_abs_diff"] == pytest.approx(1.0)


def test_mismatched_lengths_are_an_error_not_a_silent_truncation():
    with pytest.raises(ValueError, match="completion 0"):
        compare_logprobs([[-1.0, -2.0]], [[-1.0]])
    with pytest.raises(ValueError, match="2 engine completions but 1"):
        compare_logprobs([[-1.0], [-1.0]], [[-1.0]])


def test_no_tokens_gives_zero_differences():
    assert compare_logprobs([], []) == {"mean_abs_diff": 0.0, "max_abs_diff": 0.0}


def test_warning_only_above_the_bound():
    assert sync_warning({"mean_abs_diff": SYNC_WARN_MEAN_ABS_DIFF / 2, "max_abs_diff": 3.0}) is None
    message = sync_warning({"mean_abs_diff": 1.2, "max_abs_diff": 8.0})
    assert message is not None and "1.200" in message


def test_remote_workers_are_checked_one_by_one_so_a_stale_one_stands_out():
    # Worker 1 missed an update: over all tokens its difference of 2.0 averages down to 0.5; only
    # the per-worker check says which worker it was.
    engine = [[-1.0, -1.0], [-1.0], [-3.0]]
    learner = [[-1.0, -1.0], [-1.0], [-1.0]]
    metrics, warnings = sync_check_metrics(engine, learner, [0, 0, 1])

    assert metrics["sync/worker0/logprob_abs_diff_mean"] == 0.0
    assert metrics["sync/worker1/logprob_abs_diff_mean"] == pytest.approx(2.0)
    assert metrics["sync/worst_worker_logprob_abs_diff_mean"] == pytest.approx(2.0)
    assert metrics["sync/logprob_abs_diff_mean"] == pytest.approx(0.5)
    assert len(warnings) == 1 and warnings[0].startswith("rollout worker1:")


def test_an_in_process_engine_gets_the_overall_check_only():
    metrics, warnings = sync_check_metrics([[-1.0]], [[-1.5]], [None])

    assert metrics == {"sync/logprob_abs_diff_mean": 0.5, "sync/logprob_abs_diff_max": 0.5}
    assert len(warnings) == 1 and warnings[0].startswith("engine and learner")
