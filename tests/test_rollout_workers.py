"""`r1train rollout-workers`: the command each worker runs and where its threads go. The workers
themselves are started and stopped by tests/engines/test_remote_workers.py."""
from __future__ import annotations

import json

import pytest

from r1train.cli import main
from r1train.rollout_workers import cpu_binding, worker_command


@pytest.mark.parametrize("workers, cores, expected", [
    (2, [0, 1], ["0", "1"]),  # this machine: one core each
    (2, [0, 1, 2, 3, 4], ["0,1", "2,3,4"]),  # contiguous, near-equal slices
    (3, [0, 1], ["nobind"] * 3),  # more workers than cores: leave the threads to the OS
])
def test_every_worker_gets_its_own_cores(workers, cores, expected):
    assert [cpu_binding(i, workers, cores) for i in range(workers)] == expected


def test_the_worker_command_asks_for_raw_logprobs_and_the_device_specific_options():
    cpu = worker_command("/m", 8001, host="127.0.0.1", max_model_len=1024, dtype="bfloat16", kv_cache_gib=0.5, on_gpu=False)
    gpu = worker_command("/m", 8002, host="0.0.0.0", max_model_len=1024, dtype="bfloat16", kv_cache_gib=0.5, on_gpu=True)

    assert cpu[cpu.index("--logprobs-mode") + 1] == "raw_logprobs" == gpu[gpu.index("--logprobs-mode") + 1]
    assert cpu[cpu.index("--kv-cache-memory-bytes") + 1] == str(1 << 29) and "--enforce-eager" in cpu
    assert json.loads(gpu[gpu.index("--weight-transfer-config") + 1]) == {"backend": "nccl"}
    assert "--kv-cache-memory-bytes" not in gpu


def test_cpu_workers_ask_for_the_norm_kernels_their_plugin_registers():
    from r1train.engines.cpu_kernels import PROVIDER, plugin_installed

    options = dict(max_model_len=1024, dtype="bfloat16", kv_cache_gib=0.5)
    cpu = worker_command("/m", 8001, host="127.0.0.1", on_gpu=False, **options)
    native = worker_command("/m", 8001, host="127.0.0.1", on_gpu=False, norm_kernels=False, **options)
    gpu = worker_command("/m", 8002, host="0.0.0.0", on_gpu=True, **options)

    assert "--kernel-config" not in native and "--kernel-config" not in gpu
    if not plugin_installed():  # r1train used from a source folder: vLLM's processes would not know the kernels
        assert "--kernel-config" not in cpu
        pytest.skip("r1train is not pip-installed, so its vLLM plugin is not declared (pip install -e .)")
    priority = json.loads(cpu[cpu.index("--kernel-config") + 1])["ir_op_priority"]
    assert priority == {"rms_norm": [PROVIDER], "fused_add_rms_norm": [PROVIDER]}


def test_cpu_workers_share_a_prompts_partial_kv_block_between_its_samples():
    from r1train.engines.cpu_kernels import plugin_installed

    options = dict(max_model_len=1024, dtype="bfloat16", kv_cache_gib=0.5)
    cpu = worker_command("/m", 8001, host="127.0.0.1", on_gpu=False, **options)
    gpu = worker_command("/m", 8002, host="0.0.0.0", on_gpu=True, **options)
    assert "--kv-transfer-config" not in gpu  # a GPU's KV cache is laid out otherwise
    if not plugin_installed():
        assert "--kv-transfer-config" not in cpu
        pytest.skip("r1train is not pip-installed: vLLM's processes could not import the connector")
    config = json.loads(cpu[cpu.index("--kv-transfer-config") + 1])
    assert config["kv_connector_module_path"] == "r1train.engines.prompt_tails"
    assert config["kv_load_failure_policy"] == "recompute"


def test_zero_workers_is_refused_in_one_line(capsys):
    assert main(["rollout-workers", "--model", "/m", "--workers", "0"]) == 2
    assert capsys.readouterr().err.strip() == "r1train: error: --workers must be at least 1"


def test_a_cpu_worker_with_the_connector_keeps_vllms_one_reserved_core(tmp_path, monkeypatch):
    # vLLM reserves a second core whenever any KV connector is configured (made for NIXL): on a
    # 2-core machine the worker's threads then go unbound. The pool asks for vLLM's usual one.
    import torch

    from r1train import rollout_workers
    from r1train.engines.cpu_kernels import plugin_installed

    if torch.cuda.is_available() or not plugin_installed():
        pytest.skip("a CPU worker with the connector (r1train pip-installed) is what this checks")
    started = []
    monkeypatch.setattr(rollout_workers.subprocess, "Popen", lambda command, **kw: started.append((command, kw["env"])))
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    rollout_workers.WorkerPool("/m", 1, log_dir=tmp_path)
    (command, env), = started
    assert "--kv-transfer-config" in command and env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "3")  # the user's choice stands
    rollout_workers.WorkerPool("/m", 1, log_dir=tmp_path)
    assert started[-1][1]["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "3"
