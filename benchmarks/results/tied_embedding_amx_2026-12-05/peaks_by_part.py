"""RSS peaks per part of the learn phase, with bench_memory.py run underneath (a scratch probe, kept as
the record of what ran): a thread samples the resident set every 0.3 ms into the peak of the part
running then, marked by hooks: forward, "head bwd" (from the start of the backward pass until the
final norm's output gets its gradient), "layers bwd" (until the embedding's output gets its
gradient; with the tied lookup of r1train/tied_embedding.py the embedding module is not called, so
the rest of the backward pass counts here too), "embedding bwd", after the backward pass, after the
optimiser step. At the third learn phase it prints /proc/self/smaps grouped by mapping, and the
Python-visible tensors of 4 MiB and more.

    .venv/bin/python peaks_by_part.py RECIPE [bench_memory options]
Env: PROBE_SPARSE=1 makes the embedding's gradient sparse; PROBE_MMAPGRAD=1 puts every gradient in
one anonymous mapping before the first backward pass; PROBE_DETAIL=1 lists anonymous regions of
8 MiB and more one by one."""
import os, runpy, sys, threading, time
import torch
from r1train import learner as L

label = ["setup"]
peaks = {}
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page / 2**20
def sampler():
    while True:
        r, l = rss(), label[0]
        if r > peaks.get(l, 0):
            peaks[l] = r
        time.sleep(0.0003)
threading.Thread(target=sampler, daemon=True).start()

def set_label(name):
    def hook(grad):
        label[0] = name
    return hook

orig_init = L.PolicyLearner.__init__
def init(self, model, *a, **k):
    orig_init(self, model, *a, **k)
    inner = model.model
    if os.environ.get("PROBE_SPARSE"):
        inner.embed_tokens.sparse = True
    def marker(name):
        def hook(m, i, o):
            if o.requires_grad:
                o.register_hook(set_label(name))
        return hook
    inner.embed_tokens.register_forward_hook(marker("embedding bwd"))
    inner.norm.register_forward_hook(marker("layers bwd"))
L.PolicyLearner.__init__ = init

orig_backward = L.PolicyLearner._backward
import mmap as _mmap
def backward(self, loss):
    if os.environ.get("PROBE_MMAPGRAD"):
        params = [p for p in self.optimiser.parameters if p.grad is None]
        if params:
            total = sum(p.numel() for p in params)
            mm = _mmap.mmap(-1, total * 4)
            flat = torch.frombuffer(mm, dtype=torch.float32, count=total)
            offset = 0
            for p in params:
                p.grad = flat[offset:offset + p.numel()].view_as(p)
                offset += p.numel()
            del flat
    label[0] = "head bwd"
    orig_backward(self, loss)
    label[0] = "after bwd"
L.PolicyLearner._backward = backward
orig_logprobs = L.PolicyLearner._logprobs
def logprobs(self, *a, **k):
    label[0] = "forward"
    return orig_logprobs(self, *a, **k)
L.PolicyLearner._logprobs = logprobs
orig_step = L.PolicyLearner._optimiser_step
def step(self, *a, **k):
    r = orig_step(self, *a, **k)
    label[0] = "after optimiser step"
    return r
L.PolicyLearner._optimiser_step = step

def smaps_summary():
    groups = {}
    name = None
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                start, end = (int(x, 16) for x in parts[0].split("-"))
                path = parts[5] if len(parts) > 5 else ""
                size = (end - start) >> 20
                if path == "" and os.environ.get("PROBE_DETAIL") and size >= 8:
                    name = "anon region %d MiB @%x" % (size, start)
                elif path == "":
                    name = "anon >=64MiB" if size >= 64 else ("anon 8-64MiB" if size >= 8 else "anon <8MiB")
                elif path.startswith("["):
                    name = path
                else:
                    name = "file " + path.rsplit("/", 1)[-1][:40]
            elif parts[0] == "Rss:":
                groups[name] = groups.get(name, 0) + int(parts[1]) / 1024
    top = sorted(groups.items(), key=lambda kv: -kv[1])
    files = sum(v for k, v in top if k.startswith("file"))
    print("SMAPS total %.0f MiB, file-backed %.0f" % (sum(groups.values()), files))
    for k, v in top[:25]:
        print("  SMAPS %-50s %7.1f" % (k, v))
orig_train = L.PolicyLearner.train_on_batch
count = [0]
def train_on_batch(self, *a, **k):
    count[0] += 1
    if count[0] == 3:
        smaps_summary()
        import gc
        for o in gc.get_objects():
            try:
                if isinstance(o, torch.Tensor) and o.untyped_storage().nbytes() >= 4 * 2**20:
                    print("BIGTENSOR", type(o).__name__, tuple(o.shape), o.dtype, "%x" % o.untyped_storage().data_ptr(), o.untyped_storage().nbytes() >> 20, [type(r).__name__ for r in gc.get_referrers(o)][:5])
            except Exception as e:
                pass
    return orig_train(self, *a, **k)
L.PolicyLearner.train_on_batch = train_on_batch

sys.argv = ["bench_memory.py"] + sys.argv[1:]
try:
    runpy.run_path("benchmarks/bench_memory.py", run_name="__main__")
finally:
    print("PEAKS (MiB):", {k: round(v) for k, v in sorted(peaks.items(), key=lambda kv: -kv[1])})
