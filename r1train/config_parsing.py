"""Recipe parsing that knows no section: YAML mappings to dataclasses with checked keys and types,
`--set key=value` overrides, and the one-line `ConfigError`s that name the dotted key.

`r1train/config.py` holds the recipe and its stages, `r1train/config_sections.py` the sections.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A recipe problem; the message names the key and how to fix it."""


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `a.b.c=value` override; the value is parsed as YAML (so 3, 1e-5, true, [a, b])."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set '{item}': expected key=value, e.g. --set training.steps=10")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set '{item}': '{part}' is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError:
        node[parts[-1]] = value


def deep_merge(base: dict, update: Any) -> Any:
    """`base` with `update` merged in, mapping by mapping (a stage's overrides of a section)."""
    if not isinstance(update, dict) or not isinstance(base, dict):
        return update
    merged = dict(base)
    for key, value in update.items():
        merged[key] = deep_merge(base.get(key), value) if key in base else value
    return merged


def build(cls: type, raw: Any, at: str) -> Any:
    """Build dataclass `cls` from a mapping, checking keys and types; `at` is the dotted prefix."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{at or 'recipe'}: expected a mapping of keys, got {_describe(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("stages", "overrides")}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        dotted = f"{at}.{key}" if at else str(key)
        if key not in fields:
            raise ConfigError(unknown_key(dotted, str(key), list(fields)))
        values[key] = _coerce(hints[key], value, dotted)
    return cls(**values)


def _coerce(hint: Any, value: Any, at: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, at)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, at)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{at}: expected a list, got {_describe(value)}")
        return [_coerce(args[0], v, f"{at}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{at}: expected a mapping, got {_describe(value)}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{at}: expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{at}: expected an integer, got {_describe(value)}")
        return value
    if hint is float:
        # YAML reads 1e-5 (no dot) as a string; accept numeric strings for floats.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{at}: expected a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{at}: expected a string, got {_describe(value)}")
        return value
    return value


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) < 40 else text[:37] + '...'}"


def unknown_key(dotted: str, key: str, valid: Any) -> str:
    prefix = dotted.rsplit(".", 1)[0] + "." if "." in dotted else ""
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
    return f"unknown key '{dotted}'{hint}"


def file_not_found(path: str) -> str:
    where = "" if Path(path).is_absolute() else f" (relative paths start from {Path.cwd()})"
    return f"file not found: {path}{where}; fix the path"


def check(ok: Any, key: str, reason: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {reason}")


def one_of(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{key}: '{value}' is not one of {', '.join(choices)}{hint}")


STAGE_REFERENCE = "stage:"  # `stage:<name>` in a stage's model, teacher or data means that stage's output


def referenced_stage(ref: Any) -> str | None:
    """The stage a `stage:<name>` reference names, or None when `ref` is not such a reference."""
    if isinstance(ref, str) and ref.startswith(STAGE_REFERENCE):
        return ref[len(STAGE_REFERENCE):]
    return None
