"""The multi-stage pipeline on a tiny model: every stage type in the R1 order, each fed by the one
before; an empty rejection sample; interrupting a stage and running again; `--from STAGE`."""
from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
import torch

from r1train import distill, evaluation, grpo, pipeline, rejection, sft
from r1train.config import ConfigError, recipe_from_dict
from r1train.data import DataError
from r1train.pipeline import run_recipe
from r1train.tracking import read_metrics

COLD_START = [
    {"question": "What is 2 + 3?", "answer": "5", "completion": "<think>\n2 plus 3 is 5.\n</think>\n<answer>5</answer>"},
    {"question": "What is 7 - 4?", "answer": "3", "completion": "<think>\n7 minus 4 is 3.\n</think>\n<answer>3</answer>"},
    {"question": "What is 6 + 2?", "answer": "8", "completion": "<think>\n6 and 2 make 8.\n</think>\n<answer>8</answer>"},
]
GENERAL = [{"question": "Write one sentence about the sea."}, {"question": "Name a colour you like."}]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The recipes here run torch on one thread (much faster on a shared, busy CPU); put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture()
def files(tmp_path, tokenizer) -> dict[str, str]:
    """Small data files, a reward from a file (varies within every group), and a tiny reward model."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    arithmetic = [{"question": f"What is {a} + {b}?", "answer": str(a + b)} for a in range(1, 4) for b in range(1, 3)]
    reward_file = tmp_path / "text_length.py"
    reward_file.write_text("def text_length(completions, **columns):\n    return [len(t) / 100 for t in completions]\n")
    reward_model = tmp_path / "reward-model"
    torch.manual_seed(0)
    LlamaForSequenceClassification(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, num_labels=1, pad_token_id=tokenizer.pad_token_id)).save_pretrained(reward_model)
    tokenizer.save_pretrained(reward_model)
    return {
        "train": write_jsonl(tmp_path / "train.jsonl", arithmetic),
        "test": write_jsonl(tmp_path / "test.jsonl", arithmetic[:2]),
        "cold_start": write_jsonl(tmp_path / "cold_start.jsonl", COLD_START),
        "general": write_jsonl(tmp_path / "general.jsonl", GENERAL),
        "reward_file": str(reward_file),
        "reward_model": str(reward_model),
    }


def base_recipe(tmp_path, model_dir, files, stages, **sections) -> dict:
    """Tiny budgets everywhere: 1-2 steps, 2 prompts x 2 samples of 8 tokens, HF generation, one
    torch thread, and a bare question prompt (the R1 system prompt would make sequences 5 times longer)."""
    raw = {
        "run_name": "pipe", "output_dir": str(tmp_path / "runs"), "seed": 0,
        "model": {"name": str(model_dir)},
        "data": {"train": files["train"], "prompt_template": "Question: {question}", "max_prompt_tokens": 64},
        "rollout": {"backend": "hf", "group_size": 2, "prompts_per_step": 2, "max_new_tokens": 8},
        "rewards": [{"name": "accuracy"}, {"path": files["reward_file"], "function": "text_length"}],
        "training": {"steps": 1, "learning_rate": 1e-3, "bf16": False, "batch_size": 2, "max_seq_len": 128,
                     "checkpoint_every": 1, "threads": 1},
        "evaluation": {"max_examples": 2, "samples": 1, "greedy": False, "at_start": False},
        # require: [] keeps whatever the random tiny model writes (it never answers correctly).
        "rejection": {"samples": 2, "max_prompts": 2, "max_per_prompt": 1, "require": []},
        "logging": {"tensorboard": False, "progress": False, "num_samples": 2},
        "stages": stages,
    }
    raw.update(sections)
    return raw


def r1_stages(files) -> list[dict]:
    return [
        {"name": "cold_start", "type": "sft", "data": {"train": files["cold_start"]}},
        {"name": "reasoning_rl", "type": "grpo", "model": "stage:cold_start"},
        {"name": "rejection", "type": "rejection_sampling", "model": "stage:reasoning_rl"},
        {"name": "sft", "type": "sft", "model": "stage:cold_start",
         "data": {"train": "stage:rejection", "mix": [files["cold_start"]]}},
        {"name": "all_rl", "type": "grpo", "model": "stage:sft",
         "data": {"general": files["general"], "general_ratio": 0.5},
         "rewards": [{"name": "accuracy"}, {"path": files["reward_file"], "function": "text_length"},
                     {"name": "reward_model", "kwargs": {"path": files["reward_model"]}, "applies_to": "general"}]},
        {"name": "distill", "type": "distill", "model": "base", "teacher": "stage:all_rl", "student_layers": 1},
        {"name": "eval", "type": "eval", "model": "stage:distill", "data": {"eval": files["test"]}},
    ]


@pytest.fixture()
def calls(monkeypatch) -> list[tuple]:
    """Every stage runner's call, as (stage folder name, model, data.train, data.mix)."""
    seen: list[tuple] = []

    def spy(module, name):
        real = getattr(module, name)

        def wrapper(cfg, stage_dir, model, *args, **kwargs):
            seen.append((Path(stage_dir).name, model, cfg.data.train, list(cfg.data.mix)))
            return real(cfg, stage_dir, model, *args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    spy(sft, "run_sft")
    spy(distill, "run_sft")
    spy(grpo, "run_grpo")
    spy(rejection, "run_rejection_sampling")
    spy(distill, "run_rejection_sampling")
    spy(evaluation, "run_eval_stage")
    return seen


def test_r1_pipeline_runs_every_stage_each_fed_by_the_one_before(tmp_path, tiny_model_dir, files, calls, capsys):
    recipe = recipe_from_dict(base_recipe(tmp_path, tiny_model_dir, files, r1_stages(files)))
    assert run_recipe(recipe) == 0
    run = recipe.run_dir
    out = {s.name: json.loads((run / s.name / "DONE.json").read_text())["output"] for s in recipe.stages}

    assert calls == [
        ("cold_start", str(tiny_model_dir), files["cold_start"], []),
        ("reasoning_rl", out["cold_start"], files["train"], []),
        ("rejection", out["reasoning_rl"], files["train"], []),
        ("sft", out["cold_start"], out["rejection"], [files["cold_start"]]),
        ("all_rl", out["sft"], files["train"], []),
        ("traces", out["all_rl"], files["train"], []),  # the distill stage: teacher traces, then the student
        ("student", str(run / "distill" / "student_init"), str(run / "distill" / "traces" / "dataset.jsonl"), []),
        ("eval", out["distill"], files["train"], []),
    ]
    assert out["distill"] == str(run / "distill" / "student" / "model")

    # The second SFT trained on the rejection sample and the cold-start data together.
    kept = [json.loads(line) for line in Path(out["rejection"]).read_text().splitlines()]
    assert len(kept) == 2 and all(row["stage"] == "rejection" and row["rewards"]["accuracy"] == 0.0 for row in kept)
    assert f"sft on {len(kept) + len(COLD_START)} examples" in capsys.readouterr().out

    # Second RL stage: one reasoning and one general prompt per batch, each judged by its own rewards.
    samples = [json.loads(line) for line in (run / "all_rl" / "samples.jsonl").read_text().splitlines()]
    general = [s for s in samples if s["prompt"] in {g["question"] for g in GENERAL}]
    reasoning = [s for s in samples if s not in general]
    assert general and reasoning
    assert all(s["rewards"]["accuracy"] is None and s["rewards"]["text_length"] is None
               and isinstance(s["rewards"]["reward_model"], float) for s in general)
    assert all(s["rewards"]["reward_model"] is None and s["rewards"]["accuracy"] == 0.0 for s in reasoning)
    state = json.loads((run / "all_rl" / "checkpoints" / "step-000001" / "trainer_state.json").read_text())
    assert state["sampler"] == {"reasoning": {"epoch": 0, "position": 1}, "general": {"epoch": 0, "position": 1}}

    # The distilled student is the base model cut to one layer, then trained.
    student = json.loads((Path(out["distill"]) / "config.json").read_text())
    assert student["num_hidden_layers"] == 1

    scores = json.loads(Path(out["eval"]).read_text())
    assert scores["model"] == out["distill"] and "eval/accuracy" in scores
    table = (run / "scores.md").read_text()
    assert all(f"| {s.name} | {s.type} |" in table for s in recipe.stages)


def test_an_empty_rejection_sample_leaves_the_mixed_data_or_a_one_line_error(tmp_path, tiny_model_dir, files, capsys):
    strict = {"samples": 2, "max_prompts": 2, "require": ["accuracy"]}  # a random model is never right
    stages = [
        {"name": "rejection", "type": "rejection_sampling"},
        {"name": "sft", "type": "sft", "model": "base", "data": {"train": "stage:rejection", "mix": [files["cold_start"]]}},
    ]
    recipe = recipe_from_dict(base_recipe(tmp_path, tiny_model_dir, files, stages, rejection=strict))
    assert run_recipe(recipe) == 0
    printed = capsys.readouterr().out
    assert "rejection sampling kept no sample" in printed
    assert "holds no rows" in printed and f"sft on {len(COLD_START)} examples" in printed
    assert Path(json.loads((recipe.run_dir / "rejection" / "DONE.json").read_text())["output"]).stat().st_size == 0

    stages[1]["data"] = {"train": "stage:rejection"}  # nothing else to train on
    alone = recipe_from_dict(base_recipe(tmp_path, tiny_model_dir, files, stages, rejection=strict, run_name="alone"))
    with pytest.raises(DataError, match="no examples to train on") as error:
        run_recipe(alone)
    assert "\n" not in str(error.value)
    assert (alone.run_dir / "rejection" / "DONE.json").is_file()  # a rerun will not sample again


def rl_stages() -> list[dict]:
    return [
        {"name": "cold_start", "type": "sft", "data": {"train": "COLD"}},
        {"name": "rl", "type": "grpo", "model": "stage:cold_start", "training": {"steps": 2}},
        {"name": "eval", "type": "eval", "model": "stage:rl", "data": {"eval": "TEST"}},
    ]


def short_recipe(tmp_path, model_dir, files, **sections):
    stages = rl_stages()
    stages[0]["data"]["train"] = files["cold_start"]
    stages[2]["data"]["eval"] = files["test"]
    return recipe_from_dict(base_recipe(tmp_path, model_dir, files, stages, **sections))


def mtimes(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_a_crashed_stage_resumes_without_redoing_finished_stages(tmp_path, tiny_model_dir, files, monkeypatch, capsys):
    recipe = short_recipe(tmp_path, tiny_model_dir, files)
    run = recipe.run_dir
    steps_taken: list[int] = []
    real_step = grpo.GRPOTrainer.step

    def crashing_step(self):
        steps_taken.append(self.step_count + 1)
        if len(steps_taken) == 2:
            raise RuntimeError("power cut")
        return real_step(self)

    monkeypatch.setattr(grpo.GRPOTrainer, "step", crashing_step)
    with pytest.raises(RuntimeError, match="power cut"):
        run_recipe(recipe)
    assert (run / "cold_start" / "DONE.json").is_file() and not (run / "rl" / "DONE.json").exists()
    assert [p.name for p in (run / "rl" / "checkpoints").iterdir() if p.name.startswith("step-")] == ["step-000001"]
    cold_start_files = mtimes(run / "cold_start")

    sft_runs: list[str] = []
    monkeypatch.setattr(sft.SFTTrainer, "train", lambda self: sft_runs.append(self.stage_dir.name))
    capsys.readouterr()
    assert run_recipe(recipe) == 0
    assert sft_runs == []  # the finished SFT stage was skipped...
    assert mtimes(run / "cold_start") == cold_start_files  # ...and none of its files rewritten
    assert "stage cold_start already finished, skipping" in capsys.readouterr().out
    assert steps_taken == [1, 2, 2]  # the GRPO stage went on from its step-1 checkpoint
    assert [row["step"] for row in read_metrics(run / "rl" / "metrics.jsonl")] == [1, 2]
    assert (run / "rl" / "model" / "config.json").is_file() and (run / "eval" / "scores.json").is_file()

    # --from rl reruns that stage and the ones after it; the stage before it stays as it was.
    rl_done = (run / "rl" / "DONE.json").stat().st_mtime_ns
    assert run_recipe(recipe, from_stage="rl") == 0
    assert sft_runs == [] and mtimes(run / "cold_start") == cold_start_files
    assert steps_taken[3:] == [1, 2]  # from scratch, not from the old checkpoints
    assert (run / "rl" / "DONE.json").stat().st_mtime_ns > rl_done
    assert (run / "eval" / "scores.json").is_file()


def interrupting_reward(tmp_path):
    """A reward file that sends the process SIGINT (a user's Ctrl-C) the first time it runs, leaving
    a marker file; returns (marker, reward file)."""
    marker = tmp_path / "interrupted"
    reward_file = tmp_path / "interrupt.py"
    reward_file.write_text(
        "import os, signal\nfrom pathlib import Path\n"
        "def interrupt_once(completions, **columns):\n"
        f"    if not Path({str(marker)!r}).exists():\n"
        f"        Path({str(marker)!r}).touch()\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    return [len(t) / 100 for t in completions]\n")
    return marker, reward_file


def test_a_signal_stops_a_stage_cleanly_and_running_again_finishes_it(tmp_path, tiny_model_dir, files):
    marker, reward_file = interrupting_reward(tmp_path)
    recipe = short_recipe(tmp_path, tiny_model_dir, files,
                          rewards=[{"name": "accuracy"}, {"path": str(reward_file), "function": "interrupt_once"}])
    handler = signal.getsignal(signal.SIGINT)
    assert run_recipe(recipe) == 130  # the step under way finishes, is checkpointed, then the run stops
    assert signal.getsignal(signal.SIGINT) is handler  # the stage put the handler back
    run = recipe.run_dir
    assert marker.exists() and not (run / "rl" / "DONE.json").exists()
    assert (run / "rl" / "checkpoints" / "step-000001" / "trainer_state.json").is_file()
    done_before = (run / "cold_start" / "DONE.json").stat().st_mtime_ns

    assert run_recipe(recipe) == 0
    assert (run / "cold_start" / "DONE.json").stat().st_mtime_ns == done_before
    assert [row["step"] for row in read_metrics(run / "rl" / "metrics.jsonl")] == [1, 2]
    assert (run / "eval" / "scores.json").is_file()


def test_a_signal_in_a_stages_last_step_stops_the_pipeline_before_the_next_stage(tmp_path, tiny_model_dir, files):
    marker, reward_file = interrupting_reward(tmp_path)
    stages = rl_stages()[1:]  # rl (grpo), then eval
    stages[0].update(model="base", training={"steps": 1})  # the signal lands in its only, last, step
    stages[1].update(model="stage:rl", data={"eval": files["test"]})
    recipe = recipe_from_dict(base_recipe(tmp_path, tiny_model_dir, files, stages,
                                          rewards=[{"path": str(reward_file), "function": "interrupt_once"}]))
    assert run_recipe(recipe) == 130
    run = recipe.run_dir
    assert (run / "rl" / "checkpoints" / "step-000001" / "trainer_state.json").is_file()
    assert not (run / "rl" / "DONE.json").exists() and not (run / "rl" / "model").exists()
    assert not (run / "eval").exists()  # the next stage did not start

    assert run_recipe(recipe) == 0
    assert [row["step"] for row in read_metrics(run / "rl" / "metrics.jsonl")] == [1]
    assert (run / "eval" / "scores.json").is_file()


@pytest.mark.parametrize("stage, message", [
    # data.mix is SFT data: a GRPO stage would silently ignore it
    ({"name": "rl", "type": "grpo", "data": {"mix": ["FILE"]}}, "only sft and distill stages"),
    # student_layers cuts a distillation student
    ({"name": "s", "type": "sft", "student_layers": 2}, "student_layers: is only for a distill stage"),
    ({"name": "d", "type": "distill", "teacher": "base", "student_layers": 0}, "must be at least 1"),
    # a dataset reference must name an earlier stage
    ({"name": "s", "type": "sft", "data": {"mix": ["stage:later"]}}, "must name an earlier stage"),
    # a stage reading a model-producing stage as data, or a dataset as a model (STAGE_OUTPUTS)
    ({"name": "rl", "type": "grpo", "data": {"train": "stage:s"}},
     "stages[1] (rl).data.train: 'stage:s' is a sft stage, which produces a model, not a dataset"),
    ({"name": "rl", "type": "grpo", "model": "stage:s", "data": {"mix": ["stage:s"]}}, "data.mix[0]: 'stage:s'"),
    # general prompts with no reward for them
    ({"name": "rl", "type": "grpo", "data": {"general": "FILE", "general_ratio": 0.5}}, "no reward has `applies_to: general`"),
])
def test_pipeline_settings_are_checked_when_the_recipe_loads(tmp_path, files, stage, message):
    text = json.dumps(stage).replace('"FILE"', json.dumps(files["general"]))
    earlier = [{"name": "s", "type": "sft"}] if '"stage:s"' in text else []  # a model-producing stage
    with pytest.raises(ConfigError, match=re.escape(message)):
        recipe_from_dict({"data": {"train": files["train"]}, "rewards": [{"name": "accuracy"}],
                          "stages": earlier + [json.loads(text)]})



def test_a_student_keeps_fewer_layers_than_its_parent(tmp_path, tiny_model_dir):
    from r1train.errors import RunError

    with pytest.raises(RunError, match="student_layers: 2 must be fewer than the 2 layers"):
        distill.shrink_model(str(tiny_model_dir), 2, tmp_path / "student")
    assert not (tmp_path / "student").exists()


def test_the_run_log_file_records_what_the_console_leaves_out(tmp_path):
    from r1train import pipeline
    from r1train.scoring import RewardScorer

    def raises(completions, **columns):
        raise KeyError("no such column")

    with pipeline._log_file(tmp_path / pipeline.LOG_FILE):
        RewardScorer([("broken", raises, 1.0)]).score(["a", "b"], ["p", "q"], {})
    text = (tmp_path / pipeline.LOG_FILE).read_text()
    assert "WARNING r1train.scoring: reward 'broken' raised KeyError" in text
    assert "Traceback (most recent call last)" in text and "no such column" in text
