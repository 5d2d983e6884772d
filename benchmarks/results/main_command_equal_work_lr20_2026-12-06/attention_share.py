"""How much of a timed learner step (compiled, checkpointed, packed: the main recipe's learner) is
attention: the step with transformers' sdpa attention against the same step with attention replaced
by a stand-in of the same output shape (the values, repeated per query head), alternating."""
import sys, copy, time, functools, statistics
sys.path.insert(0, '/work/main/benchmarks'); sys.path.insert(0, '/work/main')
import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from bench_learner import load_model, make_batch
from r1train.learner import PolicyLearner
from r1train.policy_loss import LossSettings

sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
MODE = {"stand_in": False}

def switchable(module, query, key, value, attention_mask, **kwargs):
    if not MODE["stand_in"]:
        return sdpa(module, query, key, value, attention_mask, **kwargs)
    groups = query.shape[1] // value.shape[1]
    out = value.repeat_interleave(groups, dim=1) + 0 * query
    return out.transpose(1, 2).contiguous(), None

ALL_ATTENTION_FUNCTIONS["sdpa"] = switchable
model, _ = load_model("smollm2-135m-instruct")
model.train()
batch = make_batch(8, 8, (95, 105), (12, 30), model.config.vocab_size)
settings = LossSettings(max_completion_length=30)
side = sys.argv[1]
MODE["stand_in"] = side == "stand_in"
learner = PolicyLearner(copy.deepcopy(model), lr=1e-6, micro_batch_tokens=4096, bf16=True,
                        share_prompts=True, compile_layers=True, gradient_checkpointing=True)
times = []
for r in range(6):
    t = time.perf_counter(); learner.train_on_batch(batch, settings); el = time.perf_counter() - t
    if r: times.append(el)
print(side, "runs", " ".join(f"{x:.2f}" for x in times), "median", f"{statistics.median(times):.2f} s", flush=True)
