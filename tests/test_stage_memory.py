"""release_finished_stage: what a finished stage left reachable only through an exception a library
keeps at module level is freed, and the exception itself stays."""
from __future__ import annotations

import gc
import sys
import types
import warnings
import weakref

import pytest

from r1train.stage_memory import release_finished_stage


class Trainer:
    """Stands for a stage's trainer, with its model and optimiser state."""


def raise_plain():
    raise ImportError("optional dependency missing")


def raise_chained():
    try:
        raise KeyError("first attempt")
    except KeyError as first:
        raise ImportError("optional dependency missing") from first


def build_stage(library: types.ModuleType, raise_error) -> weakref.ref:
    """A trainer's constructor during which a library's module is first imported, and that module
    keeps its optional import's error (as vLLM's audio module keeps torchcodec's)."""
    trainer = Trainer()  # a local of the frames the error passes through
    try:
        raise_error()
    except ImportError as error:
        library.import_error = error
    return weakref.ref(trainer)


@pytest.mark.parametrize("raise_error", [raise_plain, raise_chained], ids=["plain", "chained"])
def test_an_error_kept_at_module_level_no_longer_keeps_a_finished_stage(monkeypatch, raise_error):
    library = types.ModuleType("library_with_an_optional_import")
    monkeypatch.setitem(sys.modules, library.__name__, library)
    trainer = build_stage(library, raise_error)
    gc.collect()
    assert trainer() is not None  # the stored error's traceback holds the constructor's frame

    assert release_finished_stage() >= 1
    assert trainer() is None
    assert str(library.import_error) == "optional dependency missing"  # the error itself stays


class WarnsWhenRead:
    """Stands for a module-level object that warns on any attribute read, as the deprecated
    torch.distributed.reduce_op does: the sweep printed its FutureWarning between stages."""

    def __getattribute__(self, name):
        warnings.warn("a deprecated object was read", FutureWarning)
        return object.__getattribute__(self, name)


def test_the_sweep_reads_no_attribute_of_the_values_it_passes(monkeypatch):
    library = types.ModuleType("library_with_a_deprecated_object")
    library.reduce_op = WarnsWhenRead()
    monkeypatch.setitem(sys.modules, library.__name__, library)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        release_finished_stage()
    assert [str(w.message) for w in caught if "deprecated object" in str(w.message)] == []
