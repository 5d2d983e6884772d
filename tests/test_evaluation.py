"""`r1train eval` and `r1train report` from the command line, on a tiny model."""
from __future__ import annotations

import json

import pytest

from r1train.cli import main


@pytest.fixture()
def questions(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {a} + 1?", "answer": str(a + 1)}) + "\n"
                            for a in range(3)))
    return path


def test_eval_prints_a_table_and_writes_every_metric(tiny_model_dir, questions, tmp_path, capsys):
    out = tmp_path / "scores.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(questions), "--samples", "2",
                 "--max-new-tokens", "4", "--backend", "hf", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    metrics = result["metrics"]
    for key in ("eval/accuracy", "eval/pass@1", "eval/maj@k", "eval/pass@k", "eval/format_rate",
                "eval/completion_len", "eval/greedy_accuracy"):
        assert key in metrics, key
    assert metrics["eval/completion_len"] <= 4
    assert len(result["examples"]) == 3 and all(len(e["completions"]) == 2 for e in result["examples"])
    table = capsys.readouterr().out
    assert "pass@1" in table and str(tiny_model_dir) in table


def test_eval_rejects_a_file_without_questions(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "answer": "1"}) + "\n")
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(bad), "--backend", "hf"]) == 2
    assert "question" in capsys.readouterr().err


def test_report_of_a_folder_without_metrics_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err


def test_task_metrics_reads_code_scores_the_recipe_already_ran():
    # Running the programs again would score 0 ("assert False"); the batch's own code scores say 0.5.
    from r1train.evaluation import correctness_rule, task_metrics

    texts = ["<think>x</think><answer>print(1)</answer>"] * 2
    columns = {"tests": [["assert False"]] * 2}
    assert correctness_rule(columns) == "code"
    assert task_metrics(texts, columns, scored={"code": [1.0, 0.0]})["accuracy"] == 0.5


@pytest.mark.skipif(__import__("shutil").which("bwrap") is None, reason="bubblewrap is not installed")
def test_task_metrics_runs_code_in_the_sandbox_when_not_given_scores():
    from r1train.evaluation import task_metrics

    texts = ["<answer>def f():\n    return 1</answer>", "<answer>def f():\n    return 2</answer>"]
    assert task_metrics(texts, {"tests": [["assert f() == 1"]] * 2})["accuracy"] == 0.5


class AnswersOnlyWithoutThinking:
    """An engine that answers right only when the prompt forces an empty think and wrong otherwise,
    so the two measurements cannot be mixed up."""

    def __init__(self, tokenizer):
        self.forced = tokenizer("<think>\n</think>\n<answer>", add_special_tokens=False)["input_ids"]
        self.prompts_seen = []

    def generate(self, prompts, n, sampling):
        from r1train.engines.base import Completion

        out = []
        for i, prompt in enumerate(prompts):
            self.prompts_seen.append(prompt)
            forced = prompt[-len(self.forced):] == self.forced
            text = "2</answer>" if forced else "maybe 7\n</think>\n<answer>7</answer>"
            out += [Completion(i, prompt, [1, 2], text, None, "stop") for _ in range(n)]
        return out

    def release_idle_memory(self):
        """Nothing to give back."""


def test_no_think_evaluation_prefills_an_empty_think_and_reports_the_gain(tokenizer):
    from r1train.engines.base import SamplingSettings
    from r1train.evaluation import Evaluator

    evaluator = Evaluator(rows=[{"question": "What is 1 + 1?", "answer": "2"}], tokenizer=tokenizer, template="r1_zero",
                          system_prompt=None, question_column="question", answer_column="answer", samples=2,
                          sampling=SamplingSettings(stop=["</answer>"]), greedy=True, no_think=True)
    engine = AnswersOnlyWithoutThinking(tokenizer)
    metrics = evaluator.run(engine)
    assert metrics["eval/accuracy"] == 0.0 and metrics["eval/greedy_accuracy"] == 0.0
    assert metrics["eval/no_think_accuracy"] == 1.0 and metrics["eval/no_think_greedy_accuracy"] == 1.0
    assert metrics["eval/thinking_gain"] == -1.0
    assert metrics["eval/think_nonempty_frac"] == 1.0  # "maybe 7" is thinking
    # Four generate calls: sampled and greedy, with and without thinking; two of them forced.
    forced = [p for p in engine.prompts_seen if p[-len(engine.forced):] == engine.forced]
    assert len(engine.prompts_seen) == 4 and len(forced) == 2


class AnsweringInOneCall(AnswersOnlyWithoutThinking):
    """The same answers from an engine that takes every request in one call and reports each
    prompt's completions as they are done, as the vLLM engine does."""

    reports_progress = True

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        self.calls = []

    def generate_many(self, requests, progress=None, max_running=None):
        self.calls.append([(len(prompts), n) for prompts, n, _ in requests])
        self.max_running = max_running
        results = []
        for prompts, n, sampling in requests:
            results.append(self.generate(prompts, n, sampling))
            for _ in prompts:
                progress(n)
        return results


def test_an_engine_that_reports_progress_gets_every_request_in_one_call(tokenizer):
    from r1train import evaluation
    from r1train.engines.base import SamplingSettings
    from r1train.evaluation import Evaluator

    rows = [{"question": f"What is {a} + 1?", "answer": str(a + 1)} for a in range(60)]
    evaluator = Evaluator(rows=rows, tokenizer=tokenizer, template="r1_zero", system_prompt=None,
                          question_column="question", answer_column="answer", samples=2,
                          sampling=SamplingSettings(stop=["</answer>"]), greedy=True, no_think=True)
    engine, chunked = AnsweringInOneCall(tokenizer), AnswersOnlyWithoutThinking(tokenizer)
    metrics, by_chunks = evaluator.run(engine), evaluator.run(chunked)
    # One call for 60 questions x (2 sampled + 1 greedy) with and without thinking: 360 completions,
    # where an engine without progress reports takes chunks of 42 questions (126 completions).
    assert engine.calls == [[(60, 2), (60, 1), (60, 2), (60, 1)]]
    assert engine.max_running == evaluation.EVAL_CHUNK_COMPLETIONS  # as many at once as a chunk held
    assert len(chunked.prompts_seen) == 60 * 4
    metrics.pop("time/eval"), by_chunks.pop("time/eval")
    assert metrics == by_chunks
    assert metrics["eval/accuracy"] == metrics["eval/no_think_accuracy"] == pytest.approx(1 / 60)  # "7", "2"


def test_eval_no_think_flag_adds_the_measurement(tiny_model_dir, questions, tmp_path, capsys):
    out = tmp_path / "scores.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(questions), "--samples", "2",
                 "--max-new-tokens", "4", "--backend", "hf", "--no-think", "--out", str(out)])
    assert code == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["eval/thinking_gain"] == pytest.approx(metrics["eval/accuracy"] - metrics["eval/no_think_accuracy"])
    assert 0.0 <= metrics["eval/think_nonempty_frac"] <= 1.0
    assert "thinking_gain" in capsys.readouterr().out


def test_eval_shows_progress_with_rate_and_time_left_and_keeps_completions_grouped(tiny_model_dir, tmp_path, capsys,
                                                                                   monkeypatch):
    import r1train.evaluation

    monkeypatch.setattr(r1train.evaluation, "EVAL_CHUNK_COMPLETIONS", 4)  # several engine calls for 5 questions
    questions = tmp_path / "five.jsonl"
    questions.write_text("".join(json.dumps({"question": f"What is {a} + 2?", "answer": str(a + 2)}) + "\n"
                                 for a in range(5)))
    out = tmp_path / "scores.json"
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(questions), "--samples", "3",
                 "--max-new-tokens", "3", "--backend", "hf", "--out", str(out)]) == 0
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    final = [line for line in bar if line.startswith("eval: 100%")][-1]
    assert "20/20" in final  # 5 questions x 3 samples, then 5 greedy
    assert "sample/s" in final or "s/sample" in final  # the rate
    assert any("<" in line for line in bar if line.startswith("eval:"))  # elapsed<time left
    examples = json.loads(out.read_text())["examples"]
    assert [e["question"] for e in examples] == [f"What is {a} + 2?" for a in range(5)]
    assert all(len(e["completions"]) == 3 for e in examples)


def test_chunked_generation_numbers_prompts_as_one_call_would(tiny_model_dir, monkeypatch):
    """Four chunks of two prompts (three completions each), the engine's idle memory released after each."""
    from r1train import evaluation
    from r1train.engines.base import SamplingSettings
    from r1train.engines.hf import HFEngine
    from r1train.evaluation import _generate_in_chunks
    from r1train.models import load_model, load_tokenizer

    monkeypatch.setattr(evaluation, "EVAL_CHUNK_COMPLETIONS", 6)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    engine = HFEngine(load_model(str(tiny_model_dir)).eval(), tokenizer)
    trims = []
    monkeypatch.setattr(engine, "release_idle_memory", lambda: trims.append(len(trims)))
    prompts = [tokenizer(f"{a} plus one is", add_special_tokens=False)["input_ids"] for a in range(7)]

    class Bar:
        n = 0

        def update(self, count):
            self.n += count

    bar = Bar()
    sampled, greedy = _generate_in_chunks(engine, [(prompts, 2, SamplingSettings(max_new_tokens=2, temperature=1.0)),
                                                   (prompts, 1, SamplingSettings(max_new_tokens=2, temperature=0.0))], bar)
    assert bar.n == len(sampled) + len(greedy) == 21
    assert [c.prompt_index for c in sampled] == [i for i in range(7) for _ in range(2)]
    assert [c.prompt_index for c in greedy] == list(range(7))
    assert all(c.prompt_token_ids == prompts[c.prompt_index] for c in sampled + greedy)
    assert len(trims) == 4
