"""Rejection sampling: the filters, the statistics, the written dataset, resuming by chunks, and a
sample that keeps nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from r1train import rejection
from r1train.config import recipe_from_dict
from r1train.rejection import difficulty_bucket, judge_group, run_rejection_sampling, summarize


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("texts, tokens, failed, max_tokens, max_per_prompt, expected", [
    # a failed reward filter stays the reason; the others pass
    (["a", "b"], [3, 3], ["reward:accuracy", None], None, 2, ["reward:accuracy", "kept"]),
    # too long, checked only on samples that passed the rewards
    (["a", "b", "c"], [9, 2, 9], [None, None, "language"], 5, 2, ["too_long", "kept", "language"]),
    # the same text twice (ends' whitespace ignored): the second one (equal length: by position) is a duplicate
    (["same", " same\n", "other"], [2, 2, 3], [None, None, None], None, 5, ["kept", "duplicate", "kept"]),
    # at most m kept, shortest first
    (["long", "short", "mid"], [9, 1, 5], [None, None, None], None, 2, ["max_per_prompt", "kept", "kept"]),
    # nothing passes: nothing kept
    (["a", "b"], [1, 1], ["reward:format", "reward:format"], None, 2, ["reward:format", "reward:format"]),
])
def test_judge_group(texts, tokens, failed, max_tokens, max_per_prompt, expected):
    assert judge_group(texts, tokens, failed, max_tokens, max_per_prompt) == expected


@pytest.mark.parametrize("share, bucket", [(0.0, "0"), (0.125, "(0,0.25]"), (0.25, "(0,0.25]"), (0.5, "(0.25,0.5]"),
                                           (0.75, "(0.5,0.75]"), (0.875, "(0.75,1)"), (1.0, "1")])
def test_difficulty_bucket(share, bucket):
    assert difficulty_bucket(share) == bucket


def test_summary_counts_acceptance_overall_and_by_difficulty():
    prompts = [
        {"correct_share": 0.0, "verdicts": {"reward:accuracy": 4}},
        {"correct_share": 0.5, "verdicts": {"kept": 1, "max_per_prompt": 1, "reward:accuracy": 2}},
        {"correct_share": 1.0, "verdicts": {"kept": 2, "duplicate": 2}},
    ]
    stats = summarize(prompts, 4)
    assert (stats["samples"], stats["kept"], stats["prompts_with_kept"]) == (12, 3, 2)
    assert stats["acceptance_rate"] == pytest.approx(0.25)
    assert stats["rejected"] == {"duplicate": 2, "max_per_prompt": 1, "reward:accuracy": 6}
    assert stats["by_difficulty"]["(0.25,0.5]"] == {"prompts": 1, "samples": 4, "kept": 1, "acceptance_rate": 0.25}
    assert stats["by_difficulty"]["(0,0.25]"]["acceptance_rate"] is None  # no prompt there


def make_recipe(tmp_path, model_dir, **rejection_settings):
    rows = [{"question": f"What is {a} + 1?", "answer": str(a + 1), "level": a} for a in range(4)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = {"samples": 3, "max_per_prompt": 2, "require": []}
    settings.update(rejection_settings)
    return recipe_from_dict({
        "seed": 0, "model": {"name": str(model_dir)},
        "data": {"train": str(train), "max_prompt_tokens": 200},
        "rollout": {"backend": "hf", "prompts_per_step": 2, "max_new_tokens": 6},
        "rewards": [{"name": "accuracy"}, {"name": "format"}],
        "training": {"threads": 1},
        "rejection": settings,
        "logging": {"progress": False},
    })


def test_kept_rows_carry_their_source_scores_and_stage(tmp_path, tiny_model_dir):
    out = run_rejection_sampling(make_recipe(tmp_path, tiny_model_dir), tmp_path / "rs", str(tiny_model_dir),
                                 stage_name="rejection")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert 4 <= len(rows) <= 8  # 4 prompts x 3 samples, at most 2 kept each (duplicates dropped)
    for row in rows:
        assert row["completion"].startswith("<think>\n")  # the r1_zero prefill belongs to the response
        assert row["source_prompt"].endswith("<think>\n") and row["question"] in row["source_prompt"]
        assert set(row["rewards"]) == {"accuracy", "format"} and row["stage"] == "rejection"
        assert row["answer"] == str(row["level"] + 1)  # the source row's own columns come along
    stats = json.loads((tmp_path / "rs" / "stats.json").read_text())
    assert stats["kept"] == len(rows) and stats["samples"] == 12
    assert stats["by_difficulty"]["1"]["prompts"] == 4  # require: [] means every sample passes the rewards


def test_an_interrupted_sample_resumes_from_its_finished_chunks(tmp_path, tiny_model_dir, monkeypatch):
    recipe = make_recipe(tmp_path, tiny_model_dir)
    chunks_sampled: list[int] = []
    real = rejection._sample_chunk

    def sample(cfg, rows, *args, **kwargs):
        chunks_sampled.append(len(chunks_sampled))
        if len(chunks_sampled) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second chunk
        return real(cfg, rows, *args, **kwargs)

    monkeypatch.setattr(rejection, "_sample_chunk", sample)
    with pytest.raises(KeyboardInterrupt):
        run_rejection_sampling(recipe, tmp_path / "rs", str(tiny_model_dir))
    assert len((tmp_path / "rs" / "progress.jsonl").read_text().splitlines()) == 1
    first_chunk = json.loads((tmp_path / "rs" / "progress.jsonl").read_text())["rows"]

    out = run_rejection_sampling(recipe, tmp_path / "rs", str(tiny_model_dir))
    assert len(chunks_sampled) == 3  # only the second chunk was sampled again
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[:len(first_chunk)] == first_chunk
    assert json.loads((tmp_path / "rs" / "stats.json").read_text())["prompts"] == 4

    # Other settings: the chunks written under the old ones are not reused.
    changed = make_recipe(tmp_path, tiny_model_dir, max_per_prompt=1)
    run_rejection_sampling(changed, tmp_path / "rs", str(tiny_model_dir))
    assert len(chunks_sampled) == 5


def test_a_sample_that_keeps_nothing_writes_an_empty_dataset_and_says_so(tmp_path, tiny_model_dir, capsys):
    recipe = make_recipe(tmp_path, tiny_model_dir, require=["accuracy"])  # a random model is never right
    out = run_rejection_sampling(recipe, tmp_path / "rs", str(tiny_model_dir))
    assert out == tmp_path / "rs" / "dataset.jsonl" and out.stat().st_size == 0
    printed = capsys.readouterr().out
    assert "kept 0 of 12" in printed and "rejection sampling kept no sample" in printed
    assert json.loads((tmp_path / "rs" / "stats.json").read_text())["rejected"] == {"reward:accuracy": 12}


def test_a_require_naming_a_missing_reward_is_an_error(tmp_path, tiny_model_dir):
    from r1train.errors import RunError

    with pytest.raises(RunError, match="rejection.require names language_consistency"):
        run_rejection_sampling(make_recipe(tmp_path, tiny_model_dir, require=["language_consistency"]),
                               tmp_path / "rs", str(tiny_model_dir))
