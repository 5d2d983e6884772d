"""The tables of ../main_command_equal_work_2026-12-05.md from the files beside this script:
python3 table.py before_1 after_1 after_2 before_2    (or s_before_1 s_after_1 s_before_2 s_after_2)
or of another folder of such runs (../main_command_equal_work_compiled_2026-12-05/):
python3 table.py --in ../main_command_equal_work_compiled_2026-12-05 compiled_1 eager_1 before_1 ..."""
import json, re, statistics as st, sys
from pathlib import Path

HERE = Path(__file__).parent
if sys.argv[1:2] == ["--in"]:
    HERE, sys.argv[1:3] = Path(sys.argv[2]), []
GROUP_SIZE = 8  # the recipe's rollout.group_size: completions per prompt drawn


def time_v(tag):
    text = (HERE / "time_v.txt").read_text()
    wall = re.search(rf"^{tag}: \s*Elapsed.*: (\S+)$", text, re.M).group(1)
    rss = int(re.search(rf"^{tag}: \s*Maximum resident set size \(kbytes\): (\d+)$", text, re.M).group(1))
    return sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":")))), rss / 2**20


def figures(tag):
    ms = [json.loads(line) for line in (HERE / f"metrics_{tag}.jsonl").open()]
    steps = [m for m in ms if "time/step" in m]
    late = [m for m in steps if m["step"] >= (30 if len(steps) > 15 else 3)]
    evals = [m for m in ms if "time/eval" in m]
    wall, rss = time_v(tag)
    return {
        "wall (s)": wall, "max RSS (GiB)": rss, "steps": len(steps),
        "steps summed (s)": sum(m["time/step"] for m in steps),
        "generation summed (s)": sum(m["time/generate"] for m in steps),
        "learning summed (s)": sum(m["time/learn"] for m in steps),
        "learning, first step (s)": steps[0]["time/learn"],
        "sync+wake summed (s)": sum(m["time/sync"] + m.get("time/wake", 0) for m in steps),
        "median step, late steps (s)": st.median(m["time/step"] for m in late),
        "generated tokens/s (median)": st.median(m["throughput/gen_tokens_per_s"] for m in steps),
        "mean completion (tokens)": st.mean(m["completion_len/mean"] for m in steps),
        "generated tokens (all steps)": sum(m["completion_len/mean"] * m["sampling/prompts_drawn"] * GROUP_SIZE for m in steps),
        "zero-variance groups (mean)": st.mean(m["groups/zero_variance_frac"] for m in steps),
        "evaluations (s)": ", ".join(f"{m['time/eval']:.1f}" for m in evals),
        "held-out accuracy": ", ".join(f"{m['eval/accuracy']:.3f}" for m in evals),
        "training accuracy (mean)": st.mean(m["accuracy"] for m in steps),
    }


def shown(v):
    return v if isinstance(v, str) else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}")


tags = sys.argv[1:]
table = {tag: figures(tag) for tag in tags}
print("| | " + " | ".join(tags) + " |")
print("|---|" + "---:|" * len(tags))
for key in table[tags[0]]:
    print(f"| {key} | " + " | ".join(shown(table[t][key]) for t in tags) + " |")
