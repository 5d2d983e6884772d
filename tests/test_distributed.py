"""Data parallelism on CPU: two gloo processes must do exactly what one process does on the whole batch.

The processes are real (torch.multiprocessing, or `accelerate launch` with the shipped CPU config),
so each test pays a few seconds of process start-up; the models are tiny. GPUs are hidden from the
CPU tests' processes, which would otherwise pick NCCL on a GPU machine.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from r1train.distributed import combine_rank_metrics, shard
from r1train.fsdp import full_tensor
from r1train.learner import PolicyLearner, TrainBatch
from r1train.policy_loss import LossSettings
from r1train.tracking import read_metrics

ROOT = Path(__file__).resolve().parents[1]
CPU_CONFIG = ROOT / "recipes" / "accelerate" / "cpu_2proc.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- pure helpers
def test_shard_gives_each_rank_an_equal_interleaved_share():
    items = list(range(8))
    assert [shard(items, r, 2) for r in range(2)] == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert shard(items, 0, 1) == items
    with pytest.raises(ValueError, match="evenly"):
        shard(items, 0, 3)


def test_an_accelerate_fsdp_config_is_refused_with_what_to_use_instead(monkeypatch):
    from r1train.config import ConfigError
    from r1train.distributed import make_accelerator

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` sets for an FSDP config
    with pytest.raises(ConfigError, match="training.fsdp: true.*fsdp_8gpu.yaml"):
        make_accelerator()


def test_fsdp_does_not_combine_with_lora():
    from r1train.config import ConfigError, recipe_from_dict

    with pytest.raises(ConfigError, match="training.fsdp.*model.lora"):
        recipe_from_dict({"training": {"fsdp": True}, "model": {"lora": {"enabled": True}}})


def test_combine_rank_metrics():
    per_rank = [
        {"reward/mean": 1.0, "completion_len/max": 7, "rewards/errors": 1.0, "ratio/max": 1.2, "kl": None},
        {"reward/mean": 0.0, "completion_len/max": 9, "rewards/errors": 2.0, "ratio/max": 1.1, "kl": 0.5,
         "sync/logprob_abs_diff_max": 0.1},
    ]
    assert combine_rank_metrics(per_rank) == {
        "reward/mean": 0.5,  # a mean over ranks
        "completion_len/max": 9, "ratio/max": 1.2, "sync/logprob_abs_diff_max": 0.1,  # maxima
        "rewards/errors": 3.0,  # counts add up
        "kl": 0.5,  # None (no value on that rank) is left out
    }


# ----------------------------------------------------------------------------- exact gradients
def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=128, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def half_batches(zero_second_half: bool, shared_prompts: bool = False) -> list[TrainBatch]:
    """A fixed 12-sample batch cut into two halves of 6 (prompts and completions of varied lengths);
    with `shared_prompts`, groups of three samples share a prompt, so each process packs."""
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 128, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g).tolist()
               for _ in range(12)]
    if shared_prompts:
        prompts = [prompts[i - i % 3] for i in range(12)]
    completions = [torch.randint(1, 128, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
                   for _ in range(12)]
    advantages = torch.randn(12, generator=g)
    if zero_second_half:  # the second process then has nothing to learn from and only joins the exchange
        advantages[6:] = 0.0
    return [TrainBatch(prompts[i:i + 6], completions[i:i + 6], advantages[i:i + 6]) for i in (0, 6)]


def whole_batch(halves: list[TrainBatch], mini_batches: int) -> TrainBatch:
    """The halves as one batch, ordered so that one process's k-th mini-batch holds what the two
    processes' k-th mini-batches hold together."""
    size = len(halves[0]) // mini_batches
    order = [(h, i) for k in range(mini_batches) for h in range(2) for i in range(k * size, (k + 1) * size)]
    return TrainBatch([halves[h].prompt_ids[i] for h, i in order], [halves[h].completion_ids[i] for h, i in order],
                      torch.stack([halves[h].advantages[i] for h, i in order]))


# name: (loss aggregation, learner options, whether the second process's advantages are all zero)
CASES = {
    "token_mean": ("token_mean", {}, False),
    "sequence_mean": ("sequence_mean", {}, False),
    "token_mean_mu2_two_mini_batches": ("token_mean", {"mini_batches": 2, "updates_per_batch": 2}, False),
    "sequence_mean_idle_process": ("sequence_mean", {}, True),
    "token_mean_lora": ("token_mean", {"use_lora": True, "lora_r": 4}, False),
    # Sharded (FSDP2): the processes' micro-batch counts differ, so padding passes keep them in step.
    "token_mean_fsdp": ("token_mean", {"fsdp": True}, False),
    "sequence_mean_mu2_two_mini_batches_fsdp": ("sequence_mean", {"mini_batches": 2, "updates_per_batch": 2,
                                                                  "fsdp": True}, False),
    "token_mean_idle_process_fsdp": ("token_mean", {"fsdp": True}, True),
    "token_mean_fsdp_gradient_checkpointing": ("token_mean", {"fsdp": True, "gradient_checkpointing": True}, False),
    # Groups sharing a prompt: each process packs its samples (r1train/packing.py).
    "shared_prompts": ("token_mean", {}, False),
    "shared_prompts_mu2_two_mini_batches_fsdp": ("token_mean", {"mini_batches": 2, "updates_per_batch": 2,
                                                                "fsdp": True}, False),
    # Dr. GRPO's constant normaliser: every process divides by the same number.
    "sum_over_max_len": ("sum_over_max_len", {}, False),
    # Advantages from rewards inside each process (groups of 3), "batch" std over both processes' rewards.
    "batch_std_advantages_in_processes": ("token_mean", {}, False),
}


def step_rewards() -> torch.Tensor:
    """12 rewards in groups of 3 whose halves differ in spread: a per-process std would differ."""
    g = torch.Generator().manual_seed(2)
    return torch.cat([torch.rand(6, generator=g) * 0.2, torch.rand(6, generator=g) * 5])


def make_learner(case: str, accelerator=None) -> PolicyLearner:
    """A fresh tiny model (the same weights, LoRA adapters included, in every process); fp32, no bf16."""
    return PolicyLearner(tiny_model(), lr=1e-3, max_grad_norm=1.0, micro_batch_tokens=24, bf16=False,
                         accelerator=accelerator, **CASES[case][1])


def train(case: str, batch_index: int | None, accelerator=None) -> tuple[dict[str, torch.Tensor], dict]:
    """Train on one half of the case's batch (batch_index) or on the whole of it (None)."""
    aggregation, options, zero_second_half = CASES[case]
    halves = half_batches(zero_second_half, shared_prompts=case.startswith("shared_prompts"))
    batch = whole_batch(halves, options.get("mini_batches", 1)) if batch_index is None else halves[batch_index]
    if case == "batch_std_advantages_in_processes":
        from r1train.grpo import step_advantages

        rewards = step_rewards() if batch_index is None else step_rewards()[6 * batch_index:6 * batch_index + 6]
        batch.advantages = step_advantages(rewards, 3, "batch")[0]
    learner = make_learner(case, accelerator)
    assert learner.sharded == (accelerator is not None and options.get("fsdp", False))
    metrics = learner.train_on_batch(batch, LossSettings(loss_aggregation=aggregation, max_completion_length=8))
    if learner.sharded:  # every process gathers every tensor whole
        return {k: full_tensor(v).detach().clone() for k, v in learner.model.state_dict().items()}, metrics
    return {k: v.detach().clone() for k, v in learner.model.state_dict().items()}, metrics


def _train_one_half(rank: int, port: int, out_dir: str) -> None:
    """One of two spawned processes: train on its half of each case's batch under accelerate."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", OMP_NUM_THREADS="1")
    from r1train.distributed import make_accelerator

    accelerator = make_accelerator()
    results = {}
    for case in CASES:
        params, metrics = train(case, rank, accelerator)
        results[case] = ({name: value.cpu() for name, value in params.items()}, metrics)
    results["sharded_push"] = sharded_weight_push(accelerator)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


def sharded_weight_push(accelerator) -> dict[str, torch.Tensor]:
    """What the vLLM weight push reads from a sharded model: whole tensors, on every process."""
    from r1train.engines.weights import checkpoint_weights

    learner = PolicyLearner(tiny_model(), accelerator=accelerator, fsdp=True, bf16=False)
    assert learner.sharded
    return dict(checkpoint_weights(learner.model, torch.float32))


TWO_GPUS = [pytest.mark.gpu, pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=TWO_GPUS)])
def test_two_processes_with_half_a_batch_each_take_the_one_process_step(tmp_path, monkeypatch, device):
    if device == "cpu":
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # gloo on CPU; with GPUs visible: NCCL
    torch.multiprocessing.spawn(_train_one_half, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the spawned processes: tiny matmuls only lose from more threads
    try:
        compare_with_one_process(ranks)
    finally:
        torch.set_num_threads(threads)


def compare_with_one_process(ranks: list[dict]) -> None:
    """Each process's weights and metrics against one process trained on the whole batch."""
    whole = tiny_model().state_dict()
    for rank in range(2):  # the weight push from a sharded model: every tensor whole, tied ones twice
        pushed = ranks[rank]["sharded_push"]
        assert set(pushed) == set(whole)
        for name, value in whole.items():
            assert torch.equal(pushed[name], value), f"rank {rank}: {name}"
    for case in CASES:
        initial = make_learner(case).model.state_dict()
        expected, expected_metrics = train(case, None)
        assert any(not torch.equal(value, initial[name]) for name, value in expected.items()), case
        for rank in range(2):
            params, metrics = ranks[rank][case]
            for name, value in expected.items():
                # Summation order differs (fp32); AdamW's first steps move a weight by about lr * g / |g|,
                # so a gradient within rounding of zero can move by up to lr: 1% of lr is allowed.
                torch.testing.assert_close(params[name], value, rtol=0, atol=1e-5, msg=f"{case} rank {rank}: {name}")
            # AdamW hardly sees the gradient's scale; the loss (global normalisers) and the gradient
            # norm (summed, not averaged, over processes) do.
            assert metrics["loss"] == pytest.approx(expected_metrics["loss"], rel=1e-5, abs=1e-7), case
            assert metrics["grad_norm"] == pytest.approx(expected_metrics["grad_norm"], rel=1e-5), case


# ----------------------------------------------------------------------------- end to end
DUMP_PARAMETERS = """
import os, sys, torch
import r1train.grpo as grpo
from r1train.cli import main
from r1train.fsdp import full_tensor

train = grpo.GRPOTrainer.train

def train_and_dump(self):
    final = train(self)
    whole = {name: full_tensor(value) for name, value in self.learner.model.state_dict().items()}
    whole["vllm_executor"] = getattr(self.engine, "executor", None)
    torch.save(whole, os.path.join(sys.argv[1], f"rank{self.rank}.pt"))
    return final

grpo.GRPOTrainer.train = train_and_dump
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("fsdp, backend", [(False, "hf"), (True, "hf"), pytest.param(False, "vllm", marks=pytest.mark.vllm),
                                           pytest.param(True, "vllm", marks=pytest.mark.vllm)],
                         ids=["ddp", "fsdp", "ddp_vllm", "fsdp_vllm"])
def test_accelerate_launch_runs_grpo_on_two_cpu_processes(tmp_path, tiny_model_dir, fsdp, backend):
    """`accelerate launch` with the shipped CPU config runs `r1train run` (the CLI's own main) as two
    processes; a thin wrapper saves each process's final weights so the two can be compared. Sharded
    (FSDP), HF generation runs in lock-step, each process's vLLM engine is given the gathered whole
weights, and the run is then resumed from its checkpoint."""
    rows = [{"question": f"What is {a} + {b}?", "answer": str(a + b)} for a in range(1, 4) for b in range(1, 4)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "text_length.py").write_text(
        "def text_length(completions, **columns):\n    return [len(t) / 100 for t in completions]\n")
    recipe = {
        "run_name": "ddp", "output_dir": str(tmp_path / "runs"), "seed": 0,
        "model": {"name": str(tiny_model_dir)},
        "data": {"train": str(tmp_path / "train.jsonl"), "eval": str(tmp_path / "train.jsonl"), "max_prompt_tokens": 200},
        "evaluation": {"max_examples": 3, "samples": 2},  # every process evaluates (HF: in lock-step)
        "rollout": {"backend": backend, "vllm_kv_cache_gib": 0.05, "group_size": 4, "prompts_per_step": 2, "max_new_tokens": 8},
        "rewards": [{"name": "accuracy"}, {"path": str(tmp_path / "text_length.py"), "function": "text_length"}],
        "training": {"steps": 2, "learning_rate": 1e-3, "checkpoint_every": 1, "bf16": False, "threads": 1,
                     "fsdp": fsdp},
        "logging": {"tensorboard": False, "progress": False},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "dump.py").write_text(DUMP_PARAMETERS)
    dump = tmp_path / "params"
    dump.mkdir()
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG),
               "--main_process_port", str(free_port()), str(tmp_path / "dump.py"), str(dump),
               "run", str(tmp_path / "recipe.yaml")]
    def launch():
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    launch()

    run_dir = tmp_path / "runs" / "ddp"
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]  # one row per step: only the main process logs
    assert "eval/accuracy" in rows[0] and "eval/greedy_accuracy" in rows[2]  # held-out set, start and end
    rows = rows[1:]
    assert rows[0]["sampling/prompts_drawn"] == 2  # one prompt per process, summed
    assert rows[0]["grad_norm"] > 0
    if backend == "vllm":  # after the first update each engine samples with the pushed, gathered weights
        assert rows[1]["sync/logprob_abs_diff_mean"] < 0.1  # bf16 engine, fp32 learner
    rank0, rank1 = (torch.load(dump / f"rank{r}.pt") for r in range(2))
    if backend == "vllm":  # one engine per process, through the executor made for launched processes
        assert rank0.pop("vllm_executor") == rank1.pop("vllm_executor") == "external_launcher"
    else:
        assert rank0.pop("vllm_executor") is rank1.pop("vllm_executor") is None
    before = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    saved = load_file(str(run_dir / "model" / "model.safetensors"))
    assert any(not torch.equal(before[name], saved[name]) for name in before), "training changed nothing"
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), f"the processes' weights differ: {name}"
        if name in saved:
            assert torch.equal(value, saved[name]), name
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-000001", "step-000002"]
    if not fsdp:
        return
    # The checkpoint holds whole tensors (gathered from the shards) equal to the saved model.
    checkpoint = load_file(str(run_dir / "checkpoints" / "step-000002" / "weights.safetensors"))
    for name, value in checkpoint.items():
        assert torch.equal(value, rank0[name]), name
    # As if the run had stopped after its step-2 checkpoint, with 3 steps asked for: each process
    # loads its shards and the whole optimiser state from the checkpoint and goes on.
    (run_dir / "DONE.json").unlink()
    recipe["training"]["steps"] = 3
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    done = launch()
    assert "resuming" in done.stdout + done.stderr
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [0, 1, 2, 3]
    resumed, resumed1 = (torch.load(dump / f"rank{r}.pt") for r in range(2))
    assert all(torch.equal(value, resumed1[name]) for name, value in resumed.items() if name != "vllm_executor")
    if backend == "vllm":  # vLLM's sampling resumes in distribution only
        return
    # The same three steps without the stop land on the same weights (weights, AdamW moments and
    # the sampler's position all came back).
    recipe["run_name"] = "uninterrupted"
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    launch()
    for name, value in torch.load(dump / "rank0.pt").items():
        if name != "vllm_executor":
            assert torch.equal(value, resumed[name]), name
