import sys, time, statistics
sys.path.insert(0, '/work/main')
import torch
import vllm._C  # noqa
from tests.engines.test_cpu_sampler import runner_with, sampling_metadata
from vllm.v1.sample.ops.topk_topp_sampler import TopKTopPSampler
from r1train.engines.cpu_sampler import install
runner = runner_with(TopKTopPSampler())
vllm_forward = runner.sampler.forward
install(runner)
for rows in (64, 16, 4):
    logits = (torch.randn(rows, 49152) * 3).to(torch.bfloat16)
    md = sampling_metadata(rows, 49152)
    res = {}
    for name, f in (("vllm whole sampler + inverse-CDF draw", vllm_forward), ("short way", runner.sampler.forward)):
        ts = []
        for _ in range(30):
            t = time.perf_counter(); f(logits, md); ts.append(time.perf_counter() - t)
        res[name] = statistics.median(ts[5:])
    print(rows, {k: f"{v*1e3:.2f} ms" for k, v in res.items()})
