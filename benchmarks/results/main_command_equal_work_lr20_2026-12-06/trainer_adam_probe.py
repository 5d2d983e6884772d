"""The AdamW step inside the trainer, on the equal-work recipe (8 steps): the learner's own step
three times in a row on the same gradients, then a fresh optimiser over clones of the parameters
with the same settings and gradients, on two threads, on one, and on one with denormal floats
flushed to zero (torch.set_flush_denormal acts on the calling thread only, hence one thread).
Extra arguments are recipe overrides, e.g. training.learning_rate=1e-20; the recipe's own lr is 1e-30.

    .venv/bin/python trainer_adam_probe.py [training.learning_rate=1e-20]

Needs /tmp/eqw_recipe40cg.yaml (../main_command_equal_work_sampler_2026-12-06/recipe_40_steps_compiled_checkpointing.yaml)
and its policy folder (/tmp/eqw_policy)."""
import sys, time
sys.path.insert(0, '/work/main')
import torch
import r1train.optimiser as om
from r1train.cli import main

orig = om.Optimiser.step
times = []
def step(self, finite):
    if finite:
        t0 = time.perf_counter(); self.optimizer.step(); t1 = time.perf_counter()
        self.optimizer.step(); t2 = time.perf_counter()
        self.optimizer.step(); t3 = time.perf_counter()
        g = next(p.grad for p in self.parameters if p.grad is not None)
        times.append((t1 - t0, t2 - t1, t3 - t2))
        print(type(self.optimizer).__name__, self.optimizer.defaults.get("fused"), self.optimizer.defaults.get("foreach"), torch.get_num_threads(), len(self.parameters), sum(p.numel() for p in self.parameters), {p.dtype for p in self.parameters}, {p.grad.dtype for p in self.parameters if p.grad is not None}, flush=True)
        print(f"ADAM first {t1-t0:.3f} second {t2-t1:.3f} third {t3-t2:.3f}", flush=True)
        opt = self.optimizer
        print("groups", len(opt.param_groups), [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups], flush=True)
        p0 = self.parameters[0]; st = opt.state[p0]
        print("state", {k: (tuple(v.shape), v.dtype, v.is_contiguous(), v.device) if torch.is_tensor(v) else v for k, v in st.items()}, flush=True)
        nc = [i for i, p in enumerate(self.parameters) if not p.is_contiguous() or not p.grad.is_contiguous() or p.grad.stride() != p.stride()]
        print("noncontig", nc[:10], len(nc), flush=True)
        from r1train.adamw_state import make_adamw
        ps = [torch.nn.Parameter(p.detach().clone()) for p in self.parameters]
        for p, q in zip(ps, self.parameters): p.grad = q.grad.clone()
        o = make_adamw(ps, lr=opt.param_groups[0]["lr"], betas=opt.param_groups[0]["betas"], weight_decay=opt.param_groups[0]["weight_decay"]); o.step()
        t = time.perf_counter(); o.step(); o.step(); print(f"fresh adam same settings {(time.perf_counter()-t)/2:.3f}", flush=True)
        small = sum(int(((p.grad != 0) & (p.grad.abs() < 1e-18)).sum()) for p in self.parameters)
        zeros = sum(int((p.grad == 0).sum()) for p in self.parameters)
        print("grads below 1e-18:", small, "zeros:", zeros, flush=True)
        torch.set_num_threads(1)
        t = time.perf_counter(); o.step(); print(f"1 thread {(time.perf_counter()-t):.3f}", flush=True)
        torch.set_flush_denormal(True)
        t = time.perf_counter(); o.step(); print(f"1 thread flushed {(time.perf_counter()-t):.3f}", flush=True)
        torch.set_flush_denormal(False)
        torch.set_num_threads(2)
        del o, ps
        self.scheduler.step(); self.consecutive_nan_steps = 0
    self.optimizer.zero_grad(set_to_none=True)
    return finite
om.Optimiser.step = step
sys.argv = ["r1train", "run", "/tmp/eqw_recipe40cg.yaml", "--fresh", "--set", "training.steps=8",
            "evaluation.every=0", "evaluation.at_start=false", "training.checkpoint_every=100", "run_name=adam_probe"] + sys.argv[1:]
main()
