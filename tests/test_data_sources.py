"""Datasets as users have them: every source and prompt format loads, validates and trains one GRPO
step on the tiny model through `r1train run`; every bad one exits 2 with one line naming the key."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from r1train.cli import main
from r1train.config import DataConfig, recipe_from_dict
from r1train.data import load_data
from r1train.grpo import GRPOTrainer
from r1train.prompts import render_prompt

ROWS = [{"question": f"What is {a} + {b}?", "answer": str(a + b), "level": 1 + (a + b) % 2}
        for a in range(1, 4) for b in range(1, 3)]  # 6 rows: levels 1 and 2


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def dataset(rows):
    import datasets

    return datasets.Dataset.from_list(rows)


# ---------------------------------------------------------------------------------------------
# Sources: each builds its data in tmp and returns the data section that names it.


def jsonl_file(tmp):
    return {"train": write_jsonl(tmp / "train.jsonl", ROWS)}


def parquet_file(tmp):
    dataset(ROWS).to_parquet(str(tmp / "train.parquet"))
    return {"train": str(tmp / "train.parquet")}


def saved_dataset(tmp):
    dataset(ROWS).save_to_disk(str(tmp / "saved"))
    return {"train": str(tmp / "saved")}


def saved_dataset_dict(tmp):
    import datasets

    datasets.DatasetDict({"train": dataset(ROWS[:4]), "test": dataset(ROWS[4:])}).save_to_disk(str(tmp / "saved"))
    return {"train": str(tmp / "saved"), "eval": str(tmp / "saved")}


def parquet_shards(tmp):
    (tmp / "shards").mkdir()
    dataset(ROWS[:3]).to_parquet(str(tmp / "shards" / "part-0.parquet"))
    dataset(ROWS[3:]).to_parquet(str(tmp / "shards" / "part-1.parquet"))
    return {"train": str(tmp / "shards")}


def jsonl_shards_named_by_split(tmp):
    write_jsonl(tmp / "shards" / "train-00000-of-00002.jsonl", ROWS[:2])
    write_jsonl(tmp / "shards" / "train-00001-of-00002.jsonl", ROWS[2:4])
    write_jsonl(tmp / "shards" / "test-00000-of-00001.jsonl", ROWS[4:])
    return {"train": str(tmp / "shards"), "eval": str(tmp / "shards")}


def cache_hub_dataset(cache: Path, repo_id: str, config_name: str, splits: dict[str, list[dict]]) -> None:
    """Write `repo_id` into a `datasets` cache folder as `load_dataset(repo_id, config_name)` leaves
    it after a download: <namespace>___<name>/<config>/<version>/<hash>/ with Arrow files per split."""
    from datasets.packaged_modules.json.json import Json

    namespace, name = repo_id.split("/")
    sources = {split: write_jsonl(cache.parent / "hub-source" / f"{split}.jsonl", rows) for split, rows in splits.items()}
    builder = Json(dataset_name=name, config_name=config_name, config_id=config_name, hash="0123abcd",
                   cache_dir=str(cache), data_files=sources)
    builder.download_and_prepare()
    (cache / name).rename(cache / f"{namespace}___{name}")


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch):
    """A datasets cache of our own, and a hub endpoint that refuses connections (as on a machine
    without hub access): r1train must switch to offline mode and read the cache."""
    import datasets
    import huggingface_hub.constants

    import r1train.data_sources

    cache = tmp_path / "hf-datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(r1train.data_sources, "_hub_answered", None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    return cache


def hub_id_from_cache(tmp, cache):
    cache_hub_dataset(cache, "r1train-tests/addition", "main", {"train": ROWS[:4], "test": ROWS[4:]})
    return {"train": "r1train-tests/addition", "eval": "r1train-tests/addition", "subset": "main"}


# (id, builder, rows expected in data.train, rows expected in data.eval or None)
SOURCES = [
    ("jsonl-file", jsonl_file, 6, None),
    ("parquet-file", parquet_file, 6, None),
    ("save_to_disk-dataset", saved_dataset, 6, None),
    ("save_to_disk-datasetdict-with-splits", saved_dataset_dict, 4, 2),
    ("folder-of-parquet-shards", parquet_shards, 6, None),
    ("folder-of-jsonl-shards-named-by-split", jsonl_shards_named_by_split, 4, 2),
    ("hub-id-from-the-local-cache-offline", hub_id_from_cache, 4, 2),
]


def tiny_recipe(tmp_path: Path, model_dir: Path, data: dict, rewards=None) -> dict:
    return {
        "run_name": "src", "output_dir": str(tmp_path / "runs"), "seed": 0,
        "model": {"name": str(model_dir)},
        "data": {"max_prompt_tokens": 200, **data},
        "rollout": {"backend": "hf", "group_size": 2, "prompts_per_step": 2, "max_new_tokens": 4},
        "rewards": rewards or [{"name": "accuracy"}],
        "training": {"steps": 1, "bf16": False},
        "evaluation": {"at_start": False, "at_end": False},
        "logging": {"report_to": [], "progress": False},
    }


def run_cli(tmp_path: Path, recipe: dict, command: str = "run") -> int:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return main([command, str(path)])


def train_one_step(recipe: dict) -> dict:
    """One GRPO step from the recipe, as `r1train run` takes it (without the final save and report)."""
    config = recipe_from_dict(recipe)
    metrics, _ = GRPOTrainer(config, config.run_dir).step()
    return metrics


@pytest.mark.parametrize("build, train_rows, eval_rows", [s[1:] for s in SOURCES], ids=[s[0] for s in SOURCES])
def test_each_source_loads_validates_and_trains_a_step(tmp_path, tiny_model_dir, offline_hub, build, train_rows,
                                                       eval_rows, capsys):
    section = build(tmp_path) if build is not hub_id_from_cache else build(tmp_path, offline_hub)
    data = DataConfig(**section)
    rows = load_data(data, "train", ("question", "answer"))
    assert len(rows) == train_rows
    assert set(rows[0]) == {"question", "answer", "level"}  # every column kept, for the rewards
    if eval_rows is not None:
        assert len(load_data(data, "eval", ("question", "answer"))) == eval_rows

    recipe = tiny_recipe(tmp_path, tiny_model_dir, section)
    assert run_cli(tmp_path, recipe, "validate") == 0
    assert f"data.train {section['train']}: {train_rows} rows" in capsys.readouterr().out
    assert "reward/accuracy" in train_one_step(recipe)


def test_an_unreachable_hub_is_not_retried(offline_hub):
    """Without the offline switch, `datasets` retries an unreachable hub for about 24 s before it
    looks in its cache; with it, an uncached hub id fails at once."""
    from r1train.data import DataError

    t0 = time.perf_counter()
    with pytest.raises(DataError, match="not in the local datasets cache"):
        load_data(DataConfig(train="nobody/nothing"), "train")
    assert time.perf_counter() - t0 < 10


def test_filter_and_max_rows_pick_rows_of_train_and_eval(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    data = DataConfig(train=path, eval=path, general=path, filter={"level": 1}, max_rows=2)
    for key in ("train", "eval"):
        rows = load_data(data, key)
        assert [r["level"] for r in rows] == [1, 1]  # YAML's 1 matches the column's 1
    assert len(load_data(data, "general")) == 6  # general prompts are another dataset: not filtered
    assert len(load_data(DataConfig(train=path, filter={"level": ["1", 2]}), "train")) == 6  # a list: any of them


# ---------------------------------------------------------------------------------------------
# Prompt formats


RECORDER = '''
import json, os
def record(completions, prompts, **columns):
    with open(os.environ["R1TRAIN_TEST_RECORD"], "a") as f:
        f.write(json.dumps({"prompts": prompts, "columns": sorted(columns), "answer": columns.get("answer")}) + "\\n")
    return [0.0] * len(completions)
'''

CONVERSATION = [{"role": "user", "content": "What is 2 + 3?"}]
WITH_SYSTEM = [{"role": "system", "content": "Answer in one number."}, {"role": "user", "content": "What is 2 + 3?"}]

# (id, rows of data.train, data section extras, text the rendered prompt holds, text it must not hold)
FORMATS = [
    ("plain-question-column", [{"question": "What is 2 + 3?", "answer": "5", "level": 1}], {},
     ["What is 2 + 3?", "RECIPE SYSTEM"], []),
    ("conversational-prompt-column", [{"prompt": CONVERSATION, "answer": "5", "level": 1}],
     {"question_column": "prompt"}, ["What is 2 + 3?", "RECIPE SYSTEM"], []),
    ("conversation-with-its-own-system-message", [{"prompt": WITH_SYSTEM, "answer": "5", "level": 1}],
     {"question_column": "prompt"}, ["Answer in one number.", "What is 2 + 3?"], ["RECIPE SYSTEM"]),
    ("conversation-with-a-question-template", [{"prompt": CONVERSATION, "answer": "5", "level": 1}],
     {"question_column": "prompt", "prompt_template": "Solve: {question}"}, ["Solve: What is 2 + 3?"], []),
]


@pytest.mark.parametrize("rows, extra, present, absent", [f[1:] for f in FORMATS], ids=[f[0] for f in FORMATS])
def test_each_prompt_format_renders_validates_and_trains_a_step(tmp_path, tiny_model_dir, tokenizer, monkeypatch,
                                                                rows, extra, present, absent):
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("R1TRAIN_TEST_RECORD", str(record))
    (tmp_path / "recorder.py").write_text(RECORDER)
    data = {"train": write_jsonl(tmp_path / "train.jsonl", rows * 2), "system_prompt": "RECIPE SYSTEM", **extra}
    config = DataConfig(**data)
    question = load_data(config, "train")[0][config.question_column]
    text = render_prompt(tokenizer, question, config.prompt_template, config.system_prompt)
    for part in present:
        assert part in text
    for part in absent:
        assert part not in text

    recipe = tiny_recipe(tmp_path, tiny_model_dir, data, rewards=[
        {"name": "accuracy"}, {"path": str(tmp_path / "recorder.py"), "function": "record"}])
    assert run_cli(tmp_path, recipe, "validate") == 0
    train_one_step(recipe)
    seen = json.loads(record.read_text().splitlines()[0])
    assert {"answer", "level", config.question_column} <= set(seen["columns"])  # extra columns reach the rewards
    assert seen["prompts"][0] == rows[0][config.question_column]  # a conversation arrives as the messages


# ---------------------------------------------------------------------------------------------
# GSM8K and MATH shapes: the reference columns reach the accuracy reward as the datasets write them

SAMPLES = Path(__file__).parent / "data"


SHAPES = [
    # (id, sample file, data section extras, its first row's reference, a correct final answer)
    ("gsm8k", "gsm8k_sample.jsonl", {}, "#### 7", "7"),
    ("math", "math_sample.jsonl",
     {"question_column": "problem", "answer_column": "solution", "filter": {"level": "Level 1"}},
     "\\boxed{\\frac{7}{8}}$.", "\\frac{7}{8}"),
]


@pytest.mark.parametrize("sample, extra, reference_end, _", [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_reference_answers_reach_the_rewards_as_the_dataset_writes_them(tmp_path, tiny_model_dir, monkeypatch, sample,
                                                                        extra, reference_end, _):
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("R1TRAIN_TEST_RECORD", str(record))
    (tmp_path / "recorder.py").write_text(RECORDER)
    data = {"train": str(SAMPLES / sample), "shuffle": False, "max_prompt_tokens": 300, **extra}
    recipe = tiny_recipe(tmp_path, tiny_model_dir, data, rewards=[
        {"name": "accuracy"}, {"path": str(tmp_path / "recorder.py"), "function": "record"}])
    assert run_cli(tmp_path, recipe, "validate") == 0
    train_one_step(recipe)
    seen = json.loads(record.read_text().splitlines()[0])
    rows = [json.loads(line) for line in (SAMPLES / sample).read_text().splitlines()]
    answer_column = extra.get("answer_column", "answer")
    assert seen["answer"][0] == rows[0][answer_column]  # the whole worked solution, unchanged
    assert seen["answer"][0].endswith(reference_end)
    assert set(extra.get("filter", {})) <= set(seen["columns"])


@pytest.mark.skipif(not hasattr(__import__("rewards.extraction").extraction, "reference_answer"),
                    reason="the accuracy reward reads GSM8K/MATH references once issue #17 (Math-Verify) is merged")
@pytest.mark.parametrize("sample, extra, _, correct", [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_the_accuracy_reward_scores_a_correct_answer_against_the_dataset_reference(sample, extra, _, correct):
    import rewards

    rows = [json.loads(line) for line in (SAMPLES / sample).read_text().splitlines()]
    reference = rows[0][extra.get("answer_column", "answer")]
    completions = [f"<think>...</think><answer>{correct}</answer>", "<think>...</think><answer>41</answer>"]
    assert rewards.accuracy_reward(completions, answer=[reference, reference]) == [1.0, 0.0]


# ---------------------------------------------------------------------------------------------
# Bad data: exit 2, one line, naming the key


def datasetdict_folder(tmp):
    return saved_dataset_dict(tmp)["train"]


def malformed(tmp, conversation):
    return write_jsonl(tmp / "bad.jsonl", [{"prompt": conversation, "answer": "5"}])


# (id, data section builder (tmp, hub cache) -> dict, what the one line must say)
BAD = [
    ("missing-split", lambda tmp, cache: {"train": datasetdict_folder(tmp), "split": "validation"},
     ["data.split: 'validation' is not a split of", "(it has: train, test)"]),
    ("missing-eval-split", lambda tmp, cache: {"train": datasetdict_folder(tmp), "eval": str(tmp / "saved"),
                                               "eval_split": "dev"},
     ["data.eval_split: 'dev' is not a split"]),
    ("wrong-question-column", lambda tmp, cache: {**jsonl_file(tmp), "question_column": "problem"},
     ["data.train:", "lacks column(s) problem", "data.question_column"]),
    ("filter-on-a-missing-column", lambda tmp, cache: {**jsonl_file(tmp), "filter": {"difficulty": 1}},
     ["data.filter: data.train has no column 'difficulty'"]),
    ("filter-matching-nothing", lambda tmp, cache: {**jsonl_file(tmp), "filter": {"level": 7}},
     ["data.filter: no row of data.train has level in ['7']", "values seen: '1', '2'"]),
    ("max-rows-zero", lambda tmp, cache: {**jsonl_file(tmp), "max_rows": 0}, ["data.max_rows: must be at least 1"]),
    ("message-without-content",
     lambda tmp, cache: {"train": malformed(tmp, [{"role": "user", "text": "hi"}]), "question_column": "prompt"},
     ["data.train row 0: the question column 'prompt' message 0 has no text `content`"]),
    ("message-with-unknown-role",
     lambda tmp, cache: {"train": malformed(tmp, [{"role": "human", "content": "hi"}]), "question_column": "prompt"},
     ["message 0 has role 'human'"]),
    ("conversation-ending-with-the-assistant",
     lambda tmp, cache: {"train": malformed(tmp, CONVERSATION + [{"role": "assistant", "content": "5"}]),
                         "question_column": "prompt"},
     ["does not end with a user message"]),
    ("question-neither-text-nor-messages",
     lambda tmp, cache: {"train": malformed(tmp, {"role": "user"}), "question_column": "prompt"},
     ["the question column 'prompt' holds dict"]),
    ("empty-shard-folder", lambda tmp, cache: (tmp / "empty").mkdir() or {"train": str(tmp / "empty")},
     ["data.train:", "holds no .parquet, .jsonl or .json files"]),
    ("hub-id-not-in-the-cache", lambda tmp, cache: {"train": "nobody/nothing"},
     ["data.train: 'nobody/nothing' is no local file or folder, and as a hub dataset it is not in the local datasets "
      "cache", "the hub is offline"]),
    ("hub-subset-not-in-the-cache", lambda tmp, cache: {**hub_id_from_cache(tmp, cache), "subset": "socratic"},
     ["data.subset: 'socratic' of r1train-tests/addition is not in the local datasets cache", "cached: ['main']"]),
    ("missing-data-folder", lambda tmp, cache: {"train": str(tmp / "no" / "such" / "folder")},
     ["data.train: file not found", "fix the path"]),
]


@pytest.mark.parametrize("build, expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_data_exits_2_with_one_line_naming_the_key(tmp_path, tiny_model_dir, offline_hub, capsys, build, expected,
                                                       command):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, build(tmp_path, offline_hub))
    capsys.readouterr()
    assert run_cli(tmp_path, recipe, command) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("r1train: error: "), err
    for part in expected:
        assert part in lines[0]
    assert not (tmp_path / "runs").exists()


def test_a_real_process_writes_one_line_for_an_uncached_hub_subset_and_none_when_cached(tmp_path, tiny_model_dir):
    """In a fresh process `datasets` logs warnings of its own while it falls back to its cache;
    stderr still holds only r1train's line."""
    import os
    import subprocess
    import sys

    cache = tmp_path / "hf-datasets"
    cache_hub_dataset(cache, "r1train-tests/addition", "main", {"train": ROWS[:4], "test": ROWS[4:]})
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_DATASETS_OFFLINE", None)
    for subset, code, err in (("socratic", 2, ["r1train: error: recipe: data.subset: 'socratic' of r1train-tests/addition "
                                               "is not in the local datasets cache (cached: ['main']); set data.subset "
                                               "to one of them"]),
                              ("main", 0, [f"# {tmp_path / 'recipe.yaml'}: valid"])):
        recipe = tiny_recipe(tmp_path, tiny_model_dir, {"train": "r1train-tests/addition",
                                                        "eval": "r1train-tests/addition", "subset": subset})
        (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        done = subprocess.run([sys.executable, "-m", "r1train.cli", "validate", str(tmp_path / "recipe.yaml")],
                              capture_output=True, text=True, env=env, timeout=120)
        assert (done.returncode, done.stderr.splitlines()) == (code, err)


def test_sft_trains_a_step_on_a_saved_datasetdict_of_conversations_mixed_with_a_shard_folder(tmp_path, tiny_model_dir,
                                                                                            capsys):
    import datasets

    from r1train.sft import run_sft
    from r1train.tracking import read_metrics

    conversations = [{"prompt": WITH_SYSTEM, "completion": "<think>2 + 3 = 5</think> <answer>5</answer>"},
                     {"prompt": CONVERSATION, "completion": "<think>five</think> <answer>5</answer>"}]
    datasets.DatasetDict({"train": dataset(conversations), "test": dataset(conversations[:1])}).save_to_disk(
        str(tmp_path / "sft"))
    (tmp_path / "mix").mkdir()
    dataset([{"prompt": [{"role": "user", "content": "What is 1 + 1?"}], "completion": "<answer>2</answer>"}]).to_parquet(
        str(tmp_path / "mix" / "part-0.parquet"))
    recipe = recipe_from_dict({
        "model": {"name": str(tiny_model_dir)},
        "data": {"train": str(tmp_path / "sft"), "mix": [str(tmp_path / "mix")], "question_column": "prompt"},
        "training": {"steps": 1, "batch_size": 3, "bf16": False},
        "logging": {"report_to": [], "progress": False},
    })
    run_sft(recipe, tmp_path / "out", str(tiny_model_dir))
    assert "sft on 3 examples" in capsys.readouterr().out  # the train split (2) and the shard folder (1)
    assert [row["step"] for row in read_metrics(tmp_path / "out" / "metrics.jsonl")] == [1]
