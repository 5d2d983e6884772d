"""The disk weight push: what the learner writes for the workers, and when they are told to reload."""
from __future__ import annotations

import gc

import torch
from safetensors.torch import load_file

from r1train.engines.remote_weights import DiskWeightPush


def test_each_push_writes_one_complete_folder_with_the_tied_head_and_removes_the_one_before(tmp_path, make_tiny_model):
    model = make_tiny_model(seed=0)
    reloads: list[tuple[str, str]] = []

    def reload(url: str, folder: str) -> None:  # stands in for a worker's /collective_rpc reload
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".writing-")]  # written whole first
        reloads.append((url, folder))

    push = DiskWeightPush(tmp_path, reload, ["http://a", "http://b"], torch.bfloat16)
    push.push(model)
    first = reloads[0][1]
    written = {}
    for shard in sorted(tmp_path.glob("v000001/*.safetensors")):
        written.update(load_file(str(shard)))

    assert sorted(url for url, _ in reloads) == ["http://a", "http://b"] and {f for _, f in reloads} == {first}
    assert set(written) == set(model.state_dict())  # lm_head.weight too: vLLM keeps whichever comes last
    assert torch.equal(written["lm_head.weight"], written["model.embed_tokens.weight"])
    assert all(t.dtype == torch.bfloat16 for t in written.values())

    with torch.no_grad():
        model.model.norm.weight.add_(1.0)
    push.push(model)

    assert [p.name for p in tmp_path.iterdir()] == ["v000002"]  # the first version is gone
    second = load_file(str(next(tmp_path.glob("v000002/*.safetensors"))))
    assert torch.equal(second["model.norm.weight"], model.model.norm.weight.detach().to(torch.bfloat16))
    push.close()
    assert list(tmp_path.iterdir()) == []


def test_a_temporary_folder_is_made_and_removed_when_none_is_given(make_tiny_model):
    push = DiskWeightPush(None, lambda url, folder: None, ["http://a"], torch.float32)
    push.push(make_tiny_model(seed=0))
    root = push.root
    assert root.is_dir()
    push.close()
    assert not root.exists()


def test_a_temporary_folder_goes_with_its_push_when_a_failed_run_never_closes_it(make_tiny_model):
    push = DiskWeightPush(None, lambda url, folder: None, ["http://a"], torch.float32)
    push.push(make_tiny_model(seed=0))
    root = push.root
    assert any(root.iterdir())
    del push  # what a run that raised before close() leaves: no reference to the push
    gc.collect()
    assert not root.exists()
