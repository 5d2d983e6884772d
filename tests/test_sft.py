"""SFT on the tiny Llama: the loss mask, packing, token-budget micro-batches, the GRPO learner's
passes (unpadded, compiled) giving the padded rows' loss and gradients, learning on mixed files,
empty files, evaluation at the end (after AdamW's state is released), LoRA, exact resume after an
interruption, and skipping non-finite steps."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch._dynamo.utils import counters

from r1train import sft
from r1train.compiled_layers import cpp_compiler_found
from r1train.config import recipe_from_dict
from r1train.data import DataError, write_rows
from r1train.prompts import render_prompt
from r1train.sft import build_micro_batches, completion_nll_sum, run_sft, tokenize_example
from r1train.tracking import read_metrics
from r1train.unpadded_rows import unpadded

EXAMPLES = [
    {"question": "What is 2 + 3?", "completion": "<think>\n2 plus 3 is 5.\n</think>\n<answer>5</answer>"},
    {"question": "What is 7 - 4?", "completion": "<think>\n7 minus 4 is 3.\n</think>\n<answer>3</answer>"},
    {"question": "What is 6 * 2?", "completion": "<think>\nsix twos make twelve\n</think>\n<answer>12</answer>"},
    {"question": "What is 9 + 1?", "completion": "<think>\n9 + 1 = 10\n</think>\n<answer>10</answer>"},
]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The recipes here run torch on one thread (much faster on a shared, busy CPU); put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def make_recipe(tmp_path: Path, model_dir: Path, rows=EXAMPLES, lora: bool = False, data=None, **training):
    data_file = tmp_path / "sft.jsonl"
    write_rows(rows, data_file)
    settings = dict(steps=4, batch_size=4, learning_rate=1e-3, micro_batch_tokens=4096, max_seq_len=256,
                    bf16=False, checkpoint_every=10, threads=1)
    settings.update(training)
    return recipe_from_dict({
        "seed": 1,
        "model": {"name": str(model_dir), "lora": {"enabled": lora, "r": 4, "alpha": 8}},
        "data": {"train": str(data_file), **(data or {})},
        "training": settings,
        "evaluation": {"max_examples": 2, "samples": 2, "greedy": True},
        "rollout": {"max_new_tokens": 4},
        "logging": {"tensorboard": False, "progress": False},
    })


def load_tiny(model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def test_loss_mask_covers_exactly_the_completion_and_eos(tokenizer):
    question, completion = EXAMPLES[0]["question"], EXAMPLES[0]["completion"]
    example, truncated = tokenize_example(tokenizer, question, completion, "r1_chat", None, 256)
    assert not truncated
    prompt_ids, completion_ids = example.input_ids[:example.prompt_len], example.input_ids[example.prompt_len:]
    # The unmasked part is exactly the prompt a rollout sees; the masked part the completion then EOS.
    assert tokenizer.decode(prompt_ids) == render_prompt(tokenizer, question, "r1_chat")
    assert completion_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(completion_ids[:-1]) == completion

    batch = build_micro_batches([example], 4096, 256, False, tokenizer.pad_token_id)[0]
    masked = batch.input_ids[batch.loss_mask].tolist()
    assert masked == completion_ids  # token level: every completion token, nothing else
    assert not batch.loss_mask[0, :example.prompt_len].any()


def test_long_examples_are_truncated_or_dropped(tokenizer):
    question, completion = EXAMPLES[0]["question"], EXAMPLES[0]["completion"] * 20
    example, truncated = tokenize_example(tokenizer, question, completion, "r1_chat", None, 150)
    assert truncated and len(example) == 150 and example.prompt_len < 150
    prompt_len = example.prompt_len
    dropped, truncated = tokenize_example(tokenizer, question, completion, "r1_chat", None, prompt_len)
    assert dropped is None and truncated


def test_packing_and_micro_batches_give_the_unpacked_loss(tiny_model_dir, tokenizer):
    model = load_tiny(tiny_model_dir)
    examples = [tokenize_example(tokenizer, r["question"], r["completion"], "r1_chat", None, 1024)[0] for r in EXAMPLES]
    tokens = sum(len(e) - e.prompt_len for e in examples)

    def step_loss(batches):
        return sum(completion_nll_sum(model, b) for b in batches).item() / tokens

    one_row_each = build_micro_batches(examples, 4096, 1024, False, tokenizer.pad_token_id)
    packed = build_micro_batches(examples, 4096, 1024, True, tokenizer.pad_token_id)
    small_budget = build_micro_batches(examples, 64, 1024, False, tokenizer.pad_token_id)
    assert [b.input_ids.shape[0] for b in one_row_each] == [4]
    assert [b.input_ids.shape[0] for b in packed] == [1]  # all four in one row
    assert len(small_budget) == 4  # one example per micro-batch
    reference = step_loss(one_row_each)
    # Attention crossing examples in the packed row would change every later example's loss.
    assert step_loss(packed) == pytest.approx(reference, rel=1e-5)
    assert step_loss(small_budget) == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize("layout", [{"share_prompts": True}, {"share_prompts": False}, {"packing": True}],
                         ids=["unpadded", "rows", "packed"])
def test_the_learner_passes_give_the_padded_rows_loss_and_gradients(tiny_model_dir, tokenizer, tmp_path, layout):
    # Two completions of one question share its prompt in the learner's layout; every prompt shares
    # the chat template's system turn. Two micro-batches, to cover the accumulation. With packing,
    # the step's own padded rows, several examples to a row.
    rows = EXAMPLES + [{"question": EXAMPLES[0]["question"], "completion": "<think>\nfive\n</think>\n<answer>5</answer>"}]
    trainer = sft.SFTTrainer(make_recipe(tmp_path, tiny_model_dir, rows=rows, micro_batch_tokens=200, **layout),
                             tmp_path / "sft", str(tiny_model_dir))
    assert unpadded(trainer.model) is layout.get("share_prompts", False)
    trainer.model.double()  # float64: the layouts differ in summation order only
    examples = trainer.examples
    tokens, passes = trainer._micro_batch_nlls(examples)
    assert tokens == sum(len(e) - e.prompt_len for e in examples) and len(passes) >= 2
    loss = sum(nll() for nll in passes) / tokens
    loss.backward()

    reference = load_tiny(tiny_model_dir).double()
    batches = build_micro_batches(examples, 4096, 1024, False, tokenizer.pad_token_id)
    expected_loss = sum(completion_nll_sum(reference, b) for b in batches) / tokens
    expected_loss.backward()
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-12)
    expected = dict(reference.named_parameters())
    for name, parameter in trainer.model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name].grad, msg=lambda m: f"{name}: {m}")


@pytest.mark.skipif(not cpp_compiler_found(), reason="torch.compile on a CPU needs a C++ compiler")
def test_compiled_layers_take_the_eager_steps(tiny_model_dir, tmp_path):
    def two_steps(compile_layers: bool) -> list[dict]:
        recipe = make_recipe(tmp_path, tiny_model_dir, steps=2, batch_size=3, compile=compile_layers)
        trainer = sft.SFTTrainer(recipe, tmp_path / f"compiled_{compile_layers}", str(tiny_model_dir))
        return [trainer.step(trainer.sampler.next_batch(3)) for _ in range(2)]  # two shapes of micro-batch

    torch._dynamo.reset()  # compile afresh: graphs cached by an earlier test would not be counted
    counters.clear()
    compiled_steps = two_steps(True)
    assert counters["stats"]["unique_graphs"] >= 1  # the layers ran as compiled graphs
    for compiled, eager in zip(compiled_steps, two_steps(False)):
        assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-4)
        assert compiled["grad_norm"] == pytest.approx(eager["grad_norm"], rel=1e-4)


def test_sft_learns_and_logs(tiny_model_dir, tmp_path, capsys):
    # Half the data comes through data.mix, four epochs of batch 2.
    mixed = tmp_path / "mix.jsonl"
    write_rows(EXAMPLES[2:], mixed)
    recipe = make_recipe(tmp_path, tiny_model_dir, rows=EXAMPLES[:2], data={"mix": [str(mixed)]}, batch_size=2,
                         epochs=4.0, learning_rate=3e-3)
    out = run_sft(recipe, tmp_path / "sft", str(tiny_model_dir))
    assert "sft on 4 examples" in capsys.readouterr().out
    rows = read_metrics(tmp_path / "sft" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 9))  # 4 epochs x 4 examples / batch 2
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    for key in ("lr", "grad_norm", "throughput/learn_tokens_per_s", "nan_skipped_steps"):
        assert key in rows[0]
    trained = load_tiny(out)
    base = load_tiny(tiny_model_dir)
    assert not torch.equal(trained.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)


def test_an_empty_file_is_skipped_and_nothing_at_all_is_a_one_line_error(tiny_model_dir, tmp_path, capsys):
    # An empty file is what a rejection sample that kept nothing writes.
    empty, examples = tmp_path / "empty.jsonl", tmp_path / "examples.jsonl"
    empty.write_text("")
    write_rows(EXAMPLES[:2], examples)
    recipe = make_recipe(tmp_path, tiny_model_dir, data={"train": str(empty), "mix": [str(examples)]}, steps=1)
    run_sft(recipe, tmp_path / "mixed", str(tiny_model_dir))
    printed = capsys.readouterr().out
    assert f"data.train {empty} holds no rows" in printed and "sft on 2 examples" in printed

    recipe = make_recipe(tmp_path, tiny_model_dir, data={"train": str(empty)}, steps=1)
    with pytest.raises(DataError, match="no examples to train on") as error:
        run_sft(recipe, tmp_path / "nothing", str(tiny_model_dir))
    assert "\n" not in str(error.value) and str(empty) in str(error.value)


def test_the_saved_model_is_evaluated_when_data_eval_is_set(tiny_model_dir, tmp_path):
    held_out = tmp_path / "test.jsonl"
    write_rows([{"question": "What is 1 + 1?", "answer": "2"}, {"question": "What is 3 + 1?", "answer": "4"}], held_out)
    recipe = make_recipe(tmp_path, tiny_model_dir, data={"eval": str(held_out)}, steps=2)
    run_sft(recipe, tmp_path / "sft", str(tiny_model_dir))
    rows = read_metrics(tmp_path / "sft" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 2]  # the evaluation is a row of the last step
    assert "loss" not in rows[-1] and {"eval/accuracy", "eval/format_rate", "eval/greedy_accuracy"} <= set(rows[-1])


def test_the_optimiser_state_is_released_before_the_saved_model_is_evaluated(tiny_model_dir, tmp_path, monkeypatch):
    held_out = tmp_path / "test.jsonl"
    write_rows([{"question": "What is 1 + 1?", "answer": "2"}], held_out)
    trainer = sft.SFTTrainer(make_recipe(tmp_path, tiny_model_dir, data={"eval": str(held_out)}, steps=2),
                             tmp_path / "sft", str(tiny_model_dir))
    moments_at_evaluation = []
    monkeypatch.setattr(sft, "evaluate_model_dir", lambda cfg, model_dir: moments_at_evaluation.append(
        sum(len(state) for state in trainer.optimiser.optimizer.state.values())) or {"eval/accuracy": 0.0})
    trainer.train()
    assert moments_at_evaluation == [0]


def test_lora_saves_adapter_checkpoints_and_a_merged_model(tiny_model_dir, tmp_path):
    recipe = make_recipe(tmp_path, tiny_model_dir, lora=True, steps=2, learning_rate=1e-2)
    out = run_sft(recipe, tmp_path / "sft", str(tiny_model_dir))
    weights = load_file(str(tmp_path / "sft" / "checkpoints" / "step-000002" / "weights.safetensors"))
    assert weights and all("lora_" in name for name in weights)
    assert not any("lora" in key for key in load_file(str(out / "model.safetensors")))  # plain HF folder
    trained, base = load_tiny(out), load_tiny(tiny_model_dir)
    assert not torch.equal(trained.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(trained.model.embed_tokens.weight, base.model.embed_tokens.weight)  # not a LoRA target


def test_interrupted_sft_resumes_to_the_same_parameters(tiny_model_dir, tmp_path):
    # Batch 3 of 4 examples: the resumed run must pick up mid-epoch, with warm-up and bf16 autocast on.
    common = dict(batch_size=3, warmup_steps=2, bf16=True, lr_schedule="constant")
    straight = run_sft(make_recipe(tmp_path, tiny_model_dir, steps=4, **common), tmp_path / "a", str(tiny_model_dir))
    run_sft(make_recipe(tmp_path, tiny_model_dir, steps=2, **common), tmp_path / "b", str(tiny_model_dir))
    resumed = run_sft(make_recipe(tmp_path, tiny_model_dir, steps=4, **common), tmp_path / "b", str(tiny_model_dir))

    expected, got = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    a = read_metrics(tmp_path / "a" / "metrics.jsonl")
    b = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]  # no duplicate rows
    assert [r["loss"] for r in b] == [r["loss"] for r in a]
    state = json.loads((tmp_path / "b" / "checkpoints" / "step-000004" / "trainer_state.json").read_text())
    assert state["sampler"] == {"epoch": 2, "position": 4}  # 12 examples drawn from 3 epochs of 4


def test_non_finite_steps_are_skipped_then_stop_the_run(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(sft.SFTTrainer, "_micro_batch_nlls",
                        lambda self, examples: (1, [lambda: torch.tensor(float("nan"))]))
    out = run_sft(make_recipe(tmp_path, tiny_model_dir, steps=2, max_nan_steps=3), tmp_path / "nan", str(tiny_model_dir))
    rows = read_metrics(tmp_path / "nan" / "metrics.jsonl")
    assert [r["nan_skipped_steps"] for r in rows] == [1, 2]
    assert rows[0]["loss"] is None  # logged as null, not NaN
    base, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(base[k], after[k]) for k in base)  # the optimiser never moved

    with pytest.raises(FloatingPointError, match="consecutive"):
        run_sft(make_recipe(tmp_path, tiny_model_dir, steps=5, max_nan_steps=2), tmp_path / "stop", str(tiny_model_dir))
