"""Find reward functions by name: the registry, dotted paths and reward files.

A recipe names each reward in one of three ways, and `resolve_reward` turns any of them into a
callable `fn(completions, **columns) -> list[float | None]`:

    {name: accuracy, kwargs: {answer_source: boxed}}    # a registered name (built-in or a package's)
    {name: "my_pkg.my_module:my_reward"}                # an importable dotted path
    {path: "./my_rewards.py", function: "score"}        # a file, relative to the working directory

Registered entries are either reward functions (`@register("name")`) or factories that build one
from the recipe's kwargs (`@register("name", factory=True)` on a `get_*_reward(...)`). For a
dotted path or a file, kwargs mean the target is a factory: it is called with them and must return
the reward function. Every problem in a spec raises `RewardSpecError` with a one-line message, so
`r1train validate` can print it as is. The weight of a reward is the config's business; a `weight`
key in the spec is accepted and ignored here.

A reward declares the dataset columns it reads (`register(..., columns=..., any_columns=...)`), so
that a trainer can check a dataset before a run without knowing the reward by name: the function
`get_reward` returns carries them as its `columns_read` attribute (`ColumnsRead`). A user's own
reward may set that attribute too; without it, nothing is checked.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

RewardFunction = Callable[..., list]  # fn(completions: list[str], **columns) -> list[float | None]


class RewardSpecError(ValueError):
    """A reward named in a recipe cannot be resolved; the message is a single line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class ColumnsRead:
    """The dataset columns a reward reads: every one of `required`, and at least one of `any_of`
    where that names any. `answer` stands for the reference answer, whatever the data calls it.

    Example: ColumnsRead(any_of=("tests", "io_tests")).missing(["question", "tests"]) is None.
    """

    required: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()

    def describe(self) -> str:
        """In words: "numbers and target", "tests or io_tests", "" when nothing is read."""
        parts = list(self.required) + ([" or ".join(self.any_of)] if self.any_of else [])
        return " and ".join(parts)

    def missing(self, columns: Iterable[str]) -> str | None:
        """What of these columns `columns` lacks, in words ("numbers", "tests or io_tests"), or None."""
        present = set(columns)
        lacking = [column for column in self.required if column not in present]
        if self.any_of and not present & set(self.any_of):
            lacking.append(" or ".join(self.any_of))
        return ", ".join(lacking) or None


COLUMNS_ATTRIBUTE = "columns_read"


def columns_read(function: Callable) -> ColumnsRead:
    """The columns a reward function declares it reads (none declared: nothing required)."""
    return getattr(function, COLUMNS_ATTRIBUTE, None) or ColumnsRead()


class _Entry(NamedTuple):
    target: Callable  # the reward function, or the factory building it
    is_factory: bool
    columns: ColumnsRead


_REGISTRY: dict[str, _Entry] = {}
_SPEC_KEYS = {"name", "kwargs", "path", "function", "weight"}


def register(name: str, *, factory: bool = False, columns: tuple[str, ...] = (),
             any_columns: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Decorator adding a reward function (or, with factory=True, a reward factory) under `name`.

    `columns` are the dataset columns the reward needs every one of, `any_columns` a set of which
    it needs at least one (see `ColumnsRead`). Refuses a name that is already taken, so two
    packages cannot silently shadow each other. The decorated object is returned unchanged.
    """

    def decorator(obj: Callable) -> Callable:
        if name in _REGISTRY:
            existing = _REGISTRY[name].target
            raise ValueError(
                f"reward name {name!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}; choose another name"
            )
        _REGISTRY[name] = _Entry(obj, factory, ColumnsRead(tuple(columns), tuple(any_columns)))
        return obj

    return decorator


def registered_columns(name: str) -> ColumnsRead:
    """The columns the registered reward `name` reads."""
    if name not in _REGISTRY:
        raise RewardSpecError(_unknown_name_message(name))
    return _REGISTRY[name].columns


def list_rewards() -> list[str]:
    """Registered reward names, sorted."""
    return sorted(_REGISTRY)


def get_reward(name: str, **kwargs: Any) -> RewardFunction:
    """The registered reward `name`, built with `kwargs` when it is a factory."""
    if name not in _REGISTRY:
        raise RewardSpecError(_unknown_name_message(name))
    obj, is_factory, columns = _REGISTRY[name]
    if not is_factory:
        if kwargs:
            raise RewardSpecError(
                f"reward {name!r} takes no kwargs, got {sorted(kwargs)}"
            )
        function = obj
    else:
        function = _call_factory(obj, kwargs, label=f"reward {name!r}")
    if columns != ColumnsRead():
        try:
            setattr(function, COLUMNS_ATTRIBUTE, columns)
        except AttributeError:  # a callable that takes no attributes (a bound method, a builtin)
            pass
    return function


def resolve_reward(spec: dict) -> tuple[str, RewardFunction]:
    """Turn one recipe entry into (name, reward function); see the module docstring for the forms.

    The name is the registered name, or the function's name for a dotted path or a file.
    """
    if not isinstance(spec, dict):
        raise RewardSpecError(f"a reward entry must be a mapping, got {type(spec).__name__}: {spec!r}")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise RewardSpecError(
            f"reward entry {spec!r} has unknown key(s) {unknown}; allowed: {sorted(_SPEC_KEYS)}"
        )
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise RewardSpecError(f"reward entry {spec!r}: 'kwargs' must be a mapping")
    if ("name" in spec) == ("path" in spec):
        raise RewardSpecError(f"reward entry {spec!r} needs exactly one of 'name' or 'path'")

    if "path" in spec:
        function_name = spec.get("function")
        if not function_name:
            raise RewardSpecError(f"reward entry {spec!r} gives a 'path' but no 'function'")
        module = _load_file(str(spec["path"]))
        target = _get_attribute(module, str(function_name), label=f"file {spec['path']!r}")
        name = str(function_name).rsplit(".", 1)[-1]
        label = f"reward {function_name!r} from {spec['path']!r}"
    elif ":" in str(spec["name"]):
        module_name, _, attribute = str(spec["name"]).rpartition(":")
        module = _import_module(module_name, spec["name"])
        target = _get_attribute(module, attribute, label=f"module {module_name!r}")
        name = attribute.rsplit(".", 1)[-1]
        label = f"reward {spec['name']!r}"
    else:
        name = str(spec["name"])
        fn = get_reward(name, **kwargs)
        check_reward_signature(fn, label=f"reward {name!r}")
        return name, fn

    fn = _call_factory(target, kwargs, label=label) if kwargs else target
    check_reward_signature(fn, label=label)
    return name, fn


def check_reward_signature(fn: Any, label: str) -> None:
    """Raise RewardSpecError unless `fn` can be called as fn(completions, **columns).

    Named parameters after the first are allowed when they can be passed by keyword: they receive
    the columns of the same name. A **kwargs parameter is required, because every dataset column
    is passed.
    """
    if not callable(fn):
        raise RewardSpecError(f"{label} is not callable (got {type(fn).__name__})")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # some builtins expose no signature; they are checked when first called
    parameters = list(signature.parameters.values())
    probe_kwargs = {
        p.name: None
        for p in parameters[1:]
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    try:
        signature.bind([], **probe_kwargs, __any_dataset_column__=None)
    except TypeError as error:
        raise RewardSpecError(
            f"{label} has signature {signature}, which cannot accept (completions, **columns): "
            f"{error}"
        ) from None


def _unknown_name_message(name: str) -> str:
    names = list_rewards()
    nearest = difflib.get_close_matches(name, names, n=1, cutoff=0.0)
    hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
    return (
        f"unknown reward {name!r}{hint} Registered: {', '.join(names)}. "
        "Use 'package.module:function' or {path: file.py, function: name} for your own."
    )


def _call_factory(factory: Callable, kwargs: dict, label: str) -> RewardFunction:
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as error:
        raise RewardSpecError(f"{label}: bad kwargs {kwargs!r}: {error}") from None
    except ValueError:
        pass  # no signature to check against; the call below reports problems
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as error:
        raise RewardSpecError(f"{label}: {error}") from None


def _import_module(module_name: str, full_name: str):
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise RewardSpecError(
            f"cannot import module {module_name!r} for reward {full_name!r}: {error}"
        ) from None
    except Exception as error:  # the module itself failed while importing
        raise RewardSpecError(
            f"importing {module_name!r} for reward {full_name!r} failed: {type(error).__name__}: {error}"
        ) from None


def _load_file(path: str):
    resolved = Path(path).expanduser()
    if not resolved.is_absolute():
        resolved = Path.cwd() / resolved
    resolved = resolved.resolve()
    if not resolved.is_file():
        raise RewardSpecError(
            f"reward file {path!r} not found (looked for {resolved}, relative to {Path.cwd()})"
        )
    # One module per file, cached, so two entries naming functions of the same file share it.
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    module_name = f"_reward_file_{resolved.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    module_spec = importlib.util.spec_from_file_location(module_name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise RewardSpecError(f"reward file {path!r} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException as error:
        del sys.modules[module_name]
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        raise RewardSpecError(
            f"loading reward file {path!r} failed: {type(error).__name__}: {error}"
        ) from None
    return module


def _get_attribute(module, attribute_path: str, label: str):
    target = module
    for part in attribute_path.split("."):
        if not hasattr(target, part):
            available = sorted(
                n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
            )
            nearest = difflib.get_close_matches(part, available, n=1, cutoff=0.0)
            hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
            raise RewardSpecError(
                f"{label} has no function {attribute_path!r}{hint} "
                f"Available: {', '.join(available) or 'none'}"
            )
        target = getattr(target, part)
    return target
