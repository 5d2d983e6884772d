"""Time the rule rewards on one batch of 1,024 completions: accuracy + format + tag_count.

The batch imitates an R1-Zero run (the prompt prefills "<think>", so completions start inside the
thinking) on a mix of GSM8K-style integer answers and MATH-style LaTeX answers: correct and wrong
answers written in several forms, a few symbolic answers that need sympy, completions without the
template, reward-hacking attempts and hostile answers (a power tower, 10000!, a 100,000-digit
number, deep nesting, one 1 MB completion). Scoring goes through r1train.scoring.RewardScorer, the
trainer's path.

The first batch includes starting the sympy worker process (it imports sympy); later batches reuse
it. Nothing is cached across batches, so repeated batches cost what a new batch would.

    .venv/bin/python benchmarks/bench_rewards.py [--repeats 5]
    .venv/bin/python benchmarks/bench_rewards.py --code [--workers 4]   # the sandboxed code reward
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

from r1train.scoring import RewardScorer
from rewards import get_format_reward, get_reward, get_tag_count_reward

WORDS = "so we need to add the numbers then multiply by the rate and check the units again".split()


def thinking(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(80, 300)))


def make_batch(size: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """`size` completions (after a prefilled "<think>") and their reference answers."""
    rng = random.Random(seed)
    completions, answers = [], []
    for index in range(size):
        think = thinking(rng)
        roll = rng.random()
        value = rng.randint(2, 5000)
        numerator, denominator = rng.randint(1, 9), rng.randint(11, 19)
        if roll < 0.35:  # GSM8K-style, correct, in one of several forms
            forms = [str(value), f"{value:,}", f"${value}$", f"{value} apples", f"x = {value}"]
            answer = rng.choice(forms)
            reference = str(value)
        elif roll < 0.60:  # GSM8K-style, wrong
            answer, reference = str(value + rng.randint(1, 9)), str(value)
        elif roll < 0.70:  # MATH-style LaTeX, correct
            reference = f"\\frac{{{numerator}}}{{{denominator}}}"
            answer = rng.choice([reference, reference.replace("frac", "dfrac"), f"{numerator}/{denominator}"])
        elif roll < 0.75:  # MATH-style LaTeX, wrong
            answer = f"\\frac{{{numerator + 1}}}{{{denominator}}}"
            reference = f"\\frac{{{numerator}}}{{{denominator}}}"
        elif roll < 0.78:  # symbolic: equal forms that only sympy can confirm
            answer, reference = f"x^2 + {2 * value}x + {value * value}", f"(x + {value})^2"
        elif roll < 0.88:  # no template: truncated or plain text
            completions.append(think + (" the answer is " + str(value) if rng.random() < 0.5 else ""))
            answers.append(str(value))
            continue
        elif roll < 0.95:  # reward hacking
            hack = rng.choice([
                f"{think} <answer>{value}</answer></think>",  # answer only inside the thinking
                f"{think}</think><answer>{value - 1}, {value}, {value + 1}</answer>",  # candidates
                f"{think}</think><answer>{value}</answer><answer>{value + 1}</answer>",  # repeated
                f"{think}</think><answer></answer>",  # empty
            ])
            completions.append(hack)
            answers.append(str(value))
            continue
        else:  # hostile answers
            nested = "(" * 3_000 + "1" + ")" * 3_000
            answer = rng.choice(["9^{9^{9^{9}}}", "10000!", "9" * 100_000, nested])
            reference = str(value)
        completions.append(f"{think}</think>\n<answer>{answer}</answer>")
        answers.append(reference)
    completions[-1] = "a " * 500_000 + "</think><answer>1</answer>"  # one 1 MB completion
    return completions, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    completions, answers = make_batch(args.size)
    prompts = ["prompt"] * len(completions)
    scorer = RewardScorer([
        ("accuracy", get_reward("accuracy"), 1.0),
        ("format", get_format_reward(prefix="<think>"), 0.5),
        ("tag_count", get_tag_count_reward(prefix="<think>"), 0.25),
    ])
    megabytes = sum(len(c) for c in completions) / 1e6
    print(f"batch: {len(completions)} completions, {megabytes:.1f} MB of text")

    start = time.perf_counter()
    result = scorer.score(completions, prompts, {"answer": answers})
    first = time.perf_counter() - start
    print(f"first batch (includes starting the sympy worker): {first:.3f} s")

    timings = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = scorer.score(completions, prompts, {"answer": answers})
        timings.append(time.perf_counter() - start)
    print(f"steady state over {args.repeats} batches: median {statistics.median(timings):.3f} s, "
          f"min {min(timings):.3f} s, max {max(timings):.3f} s")
    print("means:", {k: round(v, 3) for k, v in result.metrics.items()}, "errors:", result.errors)


def make_code_batch(size: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """`size` distinct simple programs with three assert tests each: 70% correct, 20% wrong,
    10% not even Python. Every program differs (its constant), so nothing is deduplicated."""
    rng = random.Random(seed)
    completions, tests = [], []
    for index in range(size):
        name, roll = f"add_{index}", rng.random()
        body = f"x + {index}" if roll < 0.7 else (f"x - {index}" if roll < 0.9 else f"x + {index} +")
        completions.append(f"<think>add it</think><answer>```python\ndef {name}(x):\n    return {body}\n```</answer>")
        tests.append([f"assert {name}({value}) == {value + index}" for value in (1, 7, 42)])
    return completions, tests


def bench_code_reward(size: int = 1024, workers: int | None = None, repeats: int = 1) -> None:
    """Time the `code` reward (one bubblewrap sandbox per program) on a batch of simple programs."""
    import os

    from rewards import get_code_reward

    completions, tests = make_code_batch(size)
    reward = get_code_reward(workers=workers)
    print(f"code batch: {size} programs, 3 tests each, {reward.sandbox.workers} sandboxes at once, "
          f"{os.cpu_count()} CPUs")
    for _ in range(repeats):
        start = time.perf_counter()
        scores = reward(completions, tests=tests)
        elapsed = time.perf_counter() - start
        print(f"scored in {elapsed:.2f} s ({1000 * elapsed / size:.1f} ms per program); "
              f"mean score {statistics.mean(scores):.3f}")


if __name__ == "__main__":
    import sys

    if "--code" in sys.argv:
        code_parser = argparse.ArgumentParser(description="time the sandboxed code reward")
        code_parser.add_argument("--code", action="store_true")
        code_parser.add_argument("--size", type=int, default=1024)
        code_parser.add_argument("--workers", type=int, default=None)
        code_parser.add_argument("--repeats", type=int, default=1)
        code_args = code_parser.parse_args()
        bench_code_reward(code_args.size, code_args.workers, code_args.repeats)
    else:
        main()
