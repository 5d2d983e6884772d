"""Trackers of `logging.report_to`: each gets the numbers of metrics.jsonl, offline into the run folder,
read back with the tracker's own reader; a tracker that is not installed fails at `validate`."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from r1train.cli import main
from r1train.config import LoggingConfig
from r1train.trackers import scalar_metrics
from r1train.tracking import RunLogger, read_metrics


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture()
def offline_home(tmp_path, monkeypatch):
    """No W&B login, no W&B server setting, and W&B's own folders inside tmp_path."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "TRACKIO_DIR", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc holding a W&B key
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    return tmp_path


def wandb_records(log_file: Path) -> list[dict]:
    """The records of a .wandb file, read by wandb's own reader."""
    wandb_cli = Path(sys.executable).parent / "wandb"
    done = subprocess.run([str(wandb_cli), "leet", "inspect", "--json", str(log_file)], capture_output=True, text=True,
                          timeout=120, check=True)
    return [json.loads(line) for line in done.stdout.splitlines()]


def wandb_history(run_dir: Path) -> dict[int, dict]:
    """step -> logged values of the run folder's one offline wandb run."""
    [log_file] = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    history = {}
    for record in wandb_records(log_file):
        if record.get("type") == "history":
            item = record["history"]["item"]
            history[item["_step"]] = {k: v for k, v in item.items() if not k.startswith("_")}
    return history


def tensorboard_scalars(run_dir: Path) -> dict[int, dict]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    out: dict[int, dict] = {}
    for tag in events.Tags()["scalars"]:
        for event in events.Scalars(tag):
            out.setdefault(event.step, {})[tag] = event.value
    return out


def test_a_run_reporting_to_tensorboard_and_wandb_offline_writes_the_metrics_of_metrics_jsonl(
        tmp_path, tiny_model_dir, offline_home, capsys):
    from r1train.config import recipe_from_dict
    from r1train.grpo import run_grpo

    rows = [{"question": f"What is {a} + {b}?", "answer": str(a + b)} for a in range(1, 4) for b in range(1, 3)]
    recipe = recipe_from_dict({
        "run_name": "tracked", "output_dir": str(tmp_path / "runs"), "seed": 0,
        "model": {"name": str(tiny_model_dir)},
        "data": {"train": write_jsonl(tmp_path / "train.jsonl", rows), "eval": str(tmp_path / "train.jsonl"),
                 "max_prompt_tokens": 200},
        "rollout": {"backend": "hf", "group_size": 2, "prompts_per_step": 2, "max_new_tokens": 4},
        "rewards": [{"name": "accuracy"}, {"name": "tag_count"}],
        "training": {"steps": 2, "bf16": False},
        "evaluation": {"max_examples": 2, "samples": 1, "greedy": False},
        "logging": {"report_to": ["tensorboard", "wandb"], "progress": False},
    })
    run_grpo(recipe, recipe.run_dir)

    assert "wandb offline run in" in capsys.readouterr().err  # and how to upload it
    expected = {row["step"]: scalar_metrics(row) for row in read_metrics(recipe.run_dir / "metrics.jsonl")}
    assert sorted(expected) == [0, 1, 2] and "eval/pass@1" in expected[0] and "reward/mean" in expected[1]
    wandb = wandb_history(recipe.run_dir)
    tensorboard = tensorboard_scalars(recipe.run_dir)
    assert sorted(wandb) == sorted(tensorboard) == [0, 1, 2]
    for step, metrics in expected.items():
        assert set(wandb[step]) == set(metrics) == set(tensorboard[step])  # the same names everywhere
        for key, value in metrics.items():
            assert wandb[step][key] == pytest.approx(value, rel=1e-12), (step, key)
            assert tensorboard[step][key] == pytest.approx(value, rel=1e-6, abs=1e-30), (step, key)  # float32


ROWS = [{"step": 1, "time": 1.0, "reward/mean": 0.25, "eval/pass@1": 0.5, "note": "text", "missing": None},
        {"step": 2, "time": 2.0, "reward/mean": 0.75, "eval/pass@1": 1.0, "note": "text", "missing": None}]


def log_rows(run_dir: Path, trackers: list[str]) -> None:
    logger = RunLogger(run_dir, trackers=trackers, progress=False, project="r1train-test")
    for row in ROWS:
        logger.log(row["step"], {k: v for k, v in row.items() if k not in ("step", "time")})
    logger.close()


def test_a_resumed_run_continues_the_same_wandb_run_and_a_fresh_one_starts_another(tmp_path, offline_home):
    run_dir = tmp_path / "run"
    log_rows(run_dir, ["wandb"])
    first = (run_dir / "wandb_run_id").read_text()
    time.sleep(1.1)  # wandb names an offline run's folder by the second it started
    logger = RunLogger(run_dir, trackers=["wandb"], progress=False, start_step=2, project="r1train-test")
    logger.log(3, {"reward/mean": 0.5})
    logger.close()
    assert (run_dir / "wandb_run_id").read_text() == first
    logs = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [log.name for log in logs] == [f"run-{first}.wandb"] * 2  # `wandb sync` merges them into one run
    resumed = [r["history"]["item"] for r in wandb_records(logs[-1]) if r.get("type") == "history"]
    assert [(item["_step"], item["reward/mean"]) for item in resumed] == [(3, 0.5)]
    RunLogger(run_dir, trackers=["wandb"], progress=False, start_step=0, project="r1train-test").close()
    assert (run_dir / "wandb_run_id").read_text() != first  # a run started over is a new wandb run


def test_trackio_writes_the_same_numbers_into_its_local_store(tmp_path, offline_home):
    pytest.importorskip("trackio", reason="trackio is an optional extra: pip install 'r1train[trackio]'")
    import os
    import sqlite3

    # Trackio reads TRACKIO_DIR when first imported: log from a fresh process that has it set.
    store = tmp_path / "trackio-store"
    script = (f"from pathlib import Path; import tests.test_trackers as t; t.log_rows(Path({str(tmp_path / 'run')!r}), "
              "['trackio'])")
    subprocess.run([sys.executable, "-c", script], env={**os.environ, "TRACKIO_DIR": str(store)}, check=True,
                   cwd=Path(__file__).parents[1], capture_output=True, timeout=120)
    with sqlite3.connect(store / "r1train-test.db") as db:
        logged = {step: json.loads(metrics) for step, metrics in db.execute("SELECT step, metrics FROM metrics")}
    assert logged == {row["step"]: scalar_metrics(row) for row in ROWS}


def test_mlflow_writes_the_same_numbers_into_the_run_folder(tmp_path, offline_home):
    pytest.importorskip("mlflow", reason="mlflow is an optional extra: pip install 'r1train[mlflow]'")
    from mlflow import MlflowClient

    run_dir = tmp_path / "run"
    log_rows(run_dir, ["mlflow"])
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
    run_id = (run_dir / "mlflow_run_id").read_text()
    for key, stored in (("reward/mean", "reward/mean"), ("eval/pass@1", "eval/pass_at_1")):  # MLflow refuses '@'
        history = {m.step: m.value for m in client.get_metric_history(run_id, stored)}
        assert history == {row["step"]: row[key] for row in ROWS}
    logger = RunLogger(run_dir, trackers=["mlflow"], progress=False, start_step=2, project="r1train-test")
    logger.log(3, {"reward/mean": 0.5})
    logger.close()
    assert (run_dir / "mlflow_run_id").read_text() == run_id  # a resume continues the same run
    assert sorted(m.step for m in client.get_metric_history(run_id, "reward/mean")) == [1, 2, 3]


def test_the_older_tensorboard_switch_still_works():
    assert LoggingConfig().trackers == ["tensorboard"]
    assert LoggingConfig(tensorboard=False).trackers == []
    assert LoggingConfig(tensorboard=False, report_to=["tensorboard", "wandb"]).trackers == ["wandb"]
    assert LoggingConfig(tensorboard=True, report_to=["wandb"]).trackers == ["tensorboard", "wandb"]


@pytest.fixture()
def recipe_file(tmp_path, tiny_model_dir):
    def write(logging: dict) -> str:
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump({
            "run_name": "t", "output_dir": str(tmp_path / "runs"), "model": {"name": str(tiny_model_dir)},
            "data": {"train": write_jsonl(tmp_path / "train.jsonl", [{"question": "1 + 1?", "answer": "2"}]),
                     "max_prompt_tokens": 200},
            "rewards": [{"name": "accuracy"}], "logging": logging}))
        return str(path)
    return write


@pytest.mark.parametrize("logging, expected", [
    ({"report_to": ["wandbb"]}, "logging.report_to[0]: 'wandbb' is not one of tensorboard, wandb, trackio, mlflow "
                                "(did you mean 'wandb'?)"),
    ({"report_to": ["wandb", "wandb"]}, "logging.report_to: names a tracker twice"),
    ({"report_to": "wandb"}, "logging.report_to: expected a list, got str 'wandb'"),
], ids=["unknown-tracker", "tracker-twice", "not-a-list"])
def test_bad_report_to_exits_2_naming_the_key(recipe_file, capsys, logging, expected):
    assert main(["validate", recipe_file(logging)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"r1train: error: {expected}"]


def test_a_tracker_that_is_not_installed_fails_at_validate_with_the_pip_command(recipe_file, capsys, monkeypatch):
    import r1train.trackers

    # Stand in for a machine without wandb: its module name points at no installed package.
    monkeypatch.setitem(r1train.trackers.TRACKERS, "wandb", ("wandb_is_not_installed_here",
                                                            r1train.trackers.TRACKERS["wandb"][1]))
    assert main(["validate", recipe_file({"report_to": ["tensorboard", "wandb"]})]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == ("r1train: error: recipe: logging.report_to: wandb is not installed; run `pip install wandb`, "
                    "or take it out of report_to")


def test_scalar_metrics_keep_numbers_only():
    assert scalar_metrics(ROWS[0]) == {"reward/mean": 0.25, "eval/pass@1": 0.5}  # no step, time, text or None
