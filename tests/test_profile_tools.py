"""benchmarks/profile_step.py and bench_memory.py: how samples are put in phases and parts, and how
the memory account adds up (on hand-written stacks and phase rows; the real runs are benchmarks)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_memory  # noqa: E402
import profile_step  # noqa: E402

STEP = "profiled_steps (profile_step.py:138);GRPOTrainer.step (r1train/grpo.py:258)"
GENERATE = STEP + (";VLLMEngine.generate (r1train/engines/vllm_engine.py:177)"
                   ";LLMEngine.step (vllm/v1/engine/llm_engine.py:327)")
LEARN = STEP + ";PolicyLearner.train_on_batch (r1train/learner.py:311)"


def test_samples_go_to_their_phase_and_part():
    cases = [
        # The lm_head matmul runs under the logits processor: logits, not a linear layer.
        (GENERATE + ";LogitsProcessor.forward (vllm/model_executor/layers/logits_processor.py:60)"
         ";cpu_unquantized_gemm (vllm/model_executor/layers/utils.py:200)", ("generate", "logits (output layer)")),
        (GENERATE + ";LlamaMLP.forward (vllm/model_executor/models/llama.py:120)"
         ";cpu_unquantized_gemm (vllm/model_executor/layers/utils.py:200)",
         ("generate", "linear layers (oneDNN matmuls)")),
        (GENERATE + ";Scheduler.schedule (vllm/v1/core/sched/scheduler.py:300)",
         ("generate", "scheduler and KV block manager")),
        (GENERATE + ";Something.new (vllm/v1/engine/core.py:1)", ("generate", "vLLM engine loop, other")),
        # The hand-written output-layer backward runs inside autograd's backward.
        (LEARN + ";Tensor.backward (torch/_tensor.py:623);_engine_run_backward (torch/autograd/graph.py:979)"
         ";HeadLogprobs.backward (r1train/fused_head.py:120)", ("learn", "output layer backward (fused_head)")),
        (LEARN + ";Tensor.backward (torch/_tensor.py:623);_engine_run_backward (torch/autograd/graph.py:979)",
         ("learn", "backward, model")),
        (LEARN + ";AdamW.step (torch/optim/adamw.py:200)", ("learn", "optimiser step (AdamW)")),
        (STEP + ";VLLMEngine.sync_weights (r1train/engines/vllm_engine.py:230)"
         ";DirectWeightSync.push (r1train/engines/direct_sync.py:150)", ("sync", "copies into the engine")),
        (STEP + ";GRPOTrainer._samples (r1train/grpo.py:480)", ("other (logging, metrics, sync check)", "other")),
    ]
    for stack, expected in cases:
        assert profile_step.classify(stack.split(";")) == expected, stack


def test_only_samples_inside_the_profiled_steps_count(tmp_path):
    raw = tmp_path / "stacks.txt"
    raw.write_text(f"{LEARN};Tensor.backward (torch/_tensor.py:623) 7\n"
                   "warm_up (profile_step.py:130);GRPOTrainer.step (r1train/grpo.py:258) 50\n")
    assert profile_step.read_samples(raw) == {("learn", "backward, model"): 7}


def test_memory_account_adds_up_to_the_largest_learn_peak():
    mib = 1024**2
    rows = [
        {"label": "learn", "step": 1, "before": 1000 * mib, "peak": 5000 * mib, "after": 4500 * mib},
        {"label": "generate", "step": 2, "before": 4500 * mib, "peak": 5200 * mib, "after": 5200 * mib},
        {"label": "learn", "step": 2, "before": 1500 * mib, "peak": 6000 * mib, "after": 5500 * mib},
    ]
    computed = {"fp32 master weights": 100 * mib, "AdamW state (two moments)": 200 * mib,
                "gradients (fp32, during the learn phase)": 100 * mib, "engine weights": 50 * mib,
                "engine KV cache (reserved)": 64 * mib}
    account = bench_memory.build_account(rows, computed, runtime=400 * mib, engine_sleeps=True)
    assert account["learn_peak"] == 6000 * mib and account["learn_step"] == 2
    assert sum(account["parts"].values()) == 6000 * mib
    assert "engine KV cache (reserved)" not in account["parts"]  # released while the learner trains
    assert account["parts"]["activations and temporaries (learn peak - learn start - gradients)"] == 4400 * mib
    assert account["run_peak"] == 6000 * mib and account["held_after_learn"] == [3500 * mib, 4000 * mib]
    # An engine that frees its weights while it sleeps holds none at the learn peak.
    freed = bench_memory.build_account(rows, computed, runtime=400 * mib, engine_sleeps=True, engine_weights_freed=True)
    assert "engine weights" not in freed["parts"] and sum(freed["parts"].values()) == 6000 * mib


def test_memory_account_takes_a_learn_phase_that_found_the_optimizer_state_there():
    """The first update creates AdamW's state inside its learn phase: that phase's rise is not
    activations alone, so a later phase is accounted, and the state is not counted twice."""
    mib = 1024**2
    computed = {"fp32 master weights": 100 * mib, "AdamW state (two moments)": 200 * mib,
                "gradients (fp32, during the learn phase)": 100 * mib, "engine weights": 50 * mib,
                "engine KV cache (reserved)": 64 * mib}
    first = {"label": "learn", "step": 8, "before": 1000 * mib, "peak": 1700 * mib, "after": 1500 * mib,
             "state_created": 200 * mib}
    later = {"label": "learn", "step": 9, "before": 1300 * mib, "peak": 1650 * mib, "after": 1300 * mib,
             "state_created": 0}
    account = bench_memory.build_account([first, later], computed, runtime=400 * mib, engine_sleeps=True)
    assert account["learn_step"] == 9 and account["learn_peak"] == 1650 * mib
    assert account["largest_learn"] == {"peak": 1700 * mib, "step": 8}
    assert account["parts"]["AdamW state (two moments)"] == 200 * mib
    assert account["parts"]["activations and temporaries (learn peak - learn start - gradients)"] == 250 * mib
    assert sum(account["parts"].values()) == 1650 * mib

    alone = bench_memory.build_account([first], computed, runtime=400 * mib, engine_sleeps=True)
    assert alone["learn_step"] == 8 and alone["parts"]["AdamW state (two moments)"] == 0
    rise = "activations, temporaries, or the AdamW state this first update created (one figure)"
    assert alone["parts"][rise] == 600 * mib and sum(alone["parts"].values()) == 1700 * mib


def test_bench_memory_measures_functions_the_trainer_still_calls():
    """bench_memory wraps the names `r1train.grpo` builds its trainer with; a rename there must fail
    here rather than in the benchmark."""
    from r1train import grpo

    for name in bench_memory.SETUP_PHASES:
        assert callable(getattr(grpo, name, None)), f"r1train.grpo.{name} is gone; update bench_memory.SETUP_PHASES"


def test_bracket_takes_a_point_on_each_side_of_every_call_and_gives_the_original_back():
    import types

    meter = bench_memory.PhaseMeter()
    target = types.SimpleNamespace(build=lambda x: x * 2)
    original = meter.bracket(target, "build", "before build", "after build")
    assert target.build(21) == 42 and original(1) == 2
    assert [row["label"] for row in meter.rows] == ["before build", "after build"]


def test_a_wrapped_phase_counts_the_page_faults_its_fresh_memory_costs():
    """Writing 64 MiB of freshly mapped memory faults in about 16 thousand 4 KiB pages (fewer with
    huge pages, so the bound is loose); a phase that touches nothing new faults in next to none."""
    import mmap
    import types

    meter = bench_memory.PhaseMeter()

    def touch_fresh_memory():
        with mmap.mmap(-1, 64 << 20) as fresh:  # anonymous: its own mapping, handed back on close
            for offset in range(0, len(fresh), mmap.PAGESIZE):
                fresh[offset] = 1

    phases = types.SimpleNamespace(fresh=touch_fresh_memory, idle=lambda: None)
    meter.wrap(phases, "fresh", "fresh", step_of=lambda: 1)
    meter.wrap(phases, "idle", "idle", step_of=lambda: 1)
    phases.fresh()
    phases.idle()
    fresh, idle = meter.rows
    assert fresh["page_faults"] >= 32 and fresh["page_faults"] > 10 * max(idle["page_faults"], 1)
