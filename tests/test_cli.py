"""Bad input through the command line: each fails before any work with exit code 2, one line on
stderr naming the problem and the fix, and no run folder left behind (or one left as it was)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from r1train.cli import main
from r1train.config import load_recipe, to_yaml

# Recipes live at the top of recipes/; its subfolders hold other tools' configs (accelerate).
RECIPES = sorted(Path(__file__).resolve().parents[1].glob("recipes/*.yaml"))


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture()
def workspace(tmp_path, tiny_model_dir):
    """A valid tiny recipe (as a dict), its data, and the folder it would run in."""
    rows = [{"question": f"What is {a} + {b}?", "answer": str(a + b)} for a in range(1, 4) for b in range(1, 3)]
    recipe = {
        "run_name": "bad", "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(tiny_model_dir)},
        "data": {"train": write_jsonl(tmp_path / "train.jsonl", rows), "max_prompt_tokens": 200},
        "rollout": {"backend": "hf", "group_size": 2, "prompts_per_step": 1, "max_new_tokens": 8},
        "rewards": [{"name": "accuracy"}],
        "training": {"steps": 1, "bf16": False},
        "logging": {"tensorboard": False, "progress": False},
    }
    return tmp_path, recipe


def model_without_chat_template(tmp_path: Path, model_dir: Path) -> str:
    folder = tmp_path / "no-template"
    shutil.copytree(model_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return str(folder)


def reward_file(tmp_path: Path, source: str) -> str:
    path = tmp_path / "my_reward.py"
    path.write_text(source)
    return str(path)


# (case id, how to break the workspace, extra command-line arguments, what the message must say).
# A "how" gets (tmp_path, recipe dict) and changes the recipe; returning a string replaces the
# recipe file's text with it.
CASES = [
    ("malformed-yaml", lambda tmp, r: "training:\n  steps: [1,\n  learning_rate: 2\n", [],
     ["malformed YAML at line"]),
    ("unknown-key", lambda tmp, r: r.setdefault("algorithm", {}).update(betta=0.1), [],
     ["unknown key 'algorithm.betta'; did you mean 'algorithm.beta'?"]),
    ("wrong-type", lambda tmp, r: r["training"].update(steps="many"), [],
     ["training.steps: expected an integer, got str 'many'"]),
    ("negative-learning-rate", lambda tmp, r: r["training"].update(learning_rate=-1e-5), [],
     ["training.learning_rate: must be positive"]),
    ("group-size-1", lambda tmp, r: r["rollout"].update(group_size=1), [],
     ["rollout.group_size: must be at least 2"]),
    ("missing-data-file", lambda tmp, r: r["data"].update(train=str(tmp / "nope.jsonl")), [],
     ["data.train: file not found", "nope.jsonl", "fix the path"]),
    ("empty-data-file", lambda tmp, r: r["data"].update(train=write_jsonl(tmp / "empty.jsonl", [])), [],
     ["empty.jsonl is empty", "at least one row"]),
    ("data-lacks-reward-column",
     lambda tmp, r: r["data"].update(train=write_jsonl(tmp / "q.jsonl", [{"question": "1 + 1?"}])), [],
     ["lacks column(s) answer", "data.answer_column"]),
    ("prompt-longer-than-max-prompt-tokens", lambda tmp, r: r["data"].update(max_prompt_tokens=20), [],
     ["row 0", "longer than data.max_prompt_tokens=20", "raise data.max_prompt_tokens"]),
    ("prompt-plus-completion-beyond-context", lambda tmp, r: r["rollout"].update(max_new_tokens=400), [],
     ["exceeds the model's context of 512 tokens", "lower one of them"]),
    ("tokenizer-without-chat-template",
     lambda tmp, r: r["model"].update(name=model_without_chat_template(tmp, Path(r["model"]["name"]))), [],
     ["has no chat template", "chat_template"]),
    ("unknown-reward", lambda tmp, r: r.update(rewards=[{"name": "acuracy"}]), [],
     ["unknown reward 'acuracy'; did you mean 'accuracy'?"]),
    ("missing-reward-file", lambda tmp, r: r.update(rewards=[{"path": str(tmp / "gone.py"), "function": "f"}]), [],
     ["rewards[0].path: file not found", "gone.py"]),
    ("reward-with-wrong-signature",
     lambda tmp, r: r.update(rewards=[{"path": reward_file(tmp, "def score(text, answer):\n    return [0.0]\n"),
                                       "function": "score"}]), [],
     ["'score'", "cannot accept (completions, **columns)"]),
    ("format-prefix-doubling-the-prefill",
     lambda tmp, r: r.update(rewards=[{"name": "accuracy"}, {"name": "format", "kwargs": {"prefix": "<think>"}}]), [],
     ["rewards[1].kwargs.prefix '<think>'", "see it twice and score 0", "remove `prefix`"]),
    ("unknown-model-name", lambda tmp, r: r["model"].update(name="smollm2-136m-instruct"), [],
     ["model.name: 'smollm2-136m-instruct' is not a known alias, a folder, or a model",
      "did you mean 'smollm2-135m-instruct'?"]),
    ("run-location-under-a-file",
     lambda tmp, r: (tmp / "a-file").write_text("") or r.update(output_dir=str(tmp / "a-file" / "runs")), [],
     ["run folder", "a-file is a file, not a folder", "set output_dir"]),
    ("broken-jsonl-line",
     lambda tmp, r: r["data"].update(train=str(tmp / "broken.jsonl")) or (tmp / "broken.jsonl").write_text(
         '{"question": "1 + 1?", "answer": "2"}\n' * 300 + '{"question": "2 + 2?", "answer": 4\n'
         + '{"question": "3 + 3?", "answer": "6"}\n'), [],
     ["data.train:", "broken.jsonl, line 301: not JSON", "fix or remove that line"]),
    ("set-without-equals", lambda tmp, r: None, ["--set", "training.steps"],
     ["--set 'training.steps': expected key=value"]),
    ("resume-with-nothing-to-resume", lambda tmp, r: None, ["--resume"],
     ["--resume:", "holds no checkpoint", "run without --resume"]),
]


@pytest.mark.parametrize("how, extra, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_with_one_line_and_leaves_no_run_folder(workspace, capsys, how, extra, expected):
    tmp_path, recipe = workspace
    text = how(tmp_path, recipe)
    path = tmp_path / "recipe.yaml"
    path.write_text(text if isinstance(text, str) else yaml.safe_dump(recipe))
    capsys.readouterr()

    code = main(["run", str(path), *extra])

    err = capsys.readouterr().err
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("r1train: error: "), err
    for part in expected:
        assert part in lines[0]
    assert not (tmp_path / "runs").exists()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bad_input_leaves_an_existing_run_folder_as_it_was(workspace, capsys):
    tmp_path, recipe = workspace
    run_dir = tmp_path / "runs" / "bad"
    (run_dir / "checkpoints" / "step-000001").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-000001" / "trainer_state.json").write_text('{"step": 1}')
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    (run_dir / "config.yaml").write_text("an older config\n")
    before = snapshot(run_dir)
    for bad in ({"data": {**recipe["data"], "max_prompt_tokens": 20}}, {"rewards": [{"name": "acuracy"}]}):
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump({**recipe, **bad}))
        assert main(["run", str(path)]) == 2
        assert main(["run", str(path), "--fresh"]) == 2  # --fresh deletes nothing when the recipe is bad
    assert snapshot(run_dir) == before


def test_the_message_is_the_only_line_a_real_process_writes_to_stderr(workspace):
    """In a fresh process every library is imported and may warn; stderr still holds one line."""
    tmp_path, recipe = workspace
    recipe["data"]["max_prompt_tokens"] = 20
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    done = subprocess.run([sys.executable, "-m", "r1train.cli", "run", str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
    assert "longer than data.max_prompt_tokens=20" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_validate_prints_the_effective_config(workspace, capsys):
    tmp_path, recipe = workspace
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["validate", str(path), "--set", "training.steps=3"]) == 0
    out, err = capsys.readouterr()
    effective = yaml.safe_load(out)  # the notes are YAML comments
    assert effective["training"]["steps"] == 3
    assert effective["algorithm"]["beta"] == 0.0  # defaults are spelled out
    assert out.startswith(to_yaml(load_recipe(path, ["training.steps=3"])))
    assert "valid" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_validate_accepts_every_shipped_recipe(path, monkeypatch, capsys, recipe_sample_overrides):
    monkeypatch.chdir(path.parent.parent)
    overrides = [arg for item in recipe_sample_overrides(path.name) for arg in ("--set", item)]
    assert main(["validate", str(path), *overrides]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["run_name"] == load_recipe(path).run_name


def test_a_run_whose_rewards_judge_nothing_warns_and_stops_naming_reward_and_column(workspace, capsys, caplog):
    tmp_path, recipe = workspace
    rows = [{"question": f"What is {a} + 1?", "answer": None} for a in range(4)]  # an empty answer column
    recipe["data"]["train"] = write_jsonl(tmp_path / "null_answers.jsonl", rows)
    recipe["training"].update(steps=5, max_unscored_steps=2)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))

    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    warned = [r.getMessage() for r in caplog.records if "step 1: no reward judged" in r.getMessage()]
    assert warned and "'accuracy'" in warned[0] and "'answer'" in warned[0]
    last = err.strip().splitlines()[-1]
    assert last.startswith("r1train: error: step 2: no reward judged any of the 2 samples")
    assert "'accuracy'" in last and "column(s) 'answer' are null" in last and "training.max_unscored_steps" in last


def test_one_set_takes_several_pairs_as_the_usage_line_shows(workspace, capsys):
    tmp_path, recipe = workspace
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["validate", str(path), "--set", "training.steps=3", "seed=7", "--set", "training.learning_rate=0.5"]) == 0
    effective = yaml.safe_load(capsys.readouterr().out)
    assert (effective["training"]["steps"], effective["seed"], effective["training"]["learning_rate"]) == (3, 7, 0.5)


def test_validate_refuses_a_model_name_that_is_no_alias_folder_or_cached_hub_model(workspace, capsys):
    # A bare name is refused with or without a hub to ask; an owner/name id that the hub cannot be
    # asked about passes with a note (the GPU companion recipes name such ids).
    tmp_path, recipe = workspace
    name = "smollm2-136m-instruct"
    recipe["model"]["name"] = name
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"model.name: '{name}' is not a known alias" in err
    assert not (tmp_path / "runs").exists()


@pytest.fixture()
def read_only_folder(tmp_path):
    """A folder nobody may write to: a read-only tmpfs as root (root ignores permission bits),
    otherwise permission bits."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)  # lazy: a failed write may hold a descriptor a moment


@pytest.mark.parametrize("command", ["run", "validate"])
def test_an_unwritable_run_location_is_refused_in_one_line(workspace, capsys, read_only_folder, command):
    tmp_path, recipe = workspace
    recipe["output_dir"] = str(read_only_folder / "runs")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main([command, str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and f"{read_only_folder} is not writable; set output_dir" in err


def test_a_full_disk_during_a_runs_checkpoint_ends_it_in_one_line(workspace, capsys, monkeypatch):
    import errno

    from r1train import checkpoint

    tmp_path, recipe = workspace
    recipe["training"].update(steps=3, checkpoint_every=1)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    real_save_file, calls = checkpoint.save_file, []

    def full_at_the_second(*args, **kwargs):  # the disk fills up while checkpoint 2 is written
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save_file(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", full_at_the_second)
    capsys.readouterr()
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    checkpoints = tmp_path / "runs" / "bad" / "checkpoints"
    assert err[-1].startswith(f"r1train: error: cannot write checkpoint {checkpoints / 'step-000002'}: the disk is full")
    assert f"the last good checkpoint is {checkpoints / 'step-000001'}" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000001"]  # no .tmp-step-000002


def test_a_full_disk_while_saving_the_final_model_ends_the_run_in_one_line(workspace, capsys, monkeypatch):
    import errno

    from r1train import grpo

    tmp_path, recipe = workspace
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))

    def disk_full(model, tokenizer, folder, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder))

    monkeypatch.setattr(grpo, "save_model", disk_full)
    capsys.readouterr()
    assert main(["run", str(path)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("r1train: error: the disk is full (writing ") and "run the same command again" in last
    assert (tmp_path / "runs" / "bad" / "checkpoints" / "step-000001").is_dir()  # the checkpoint is intact
