"""Time the rule rewards on one batch of 1,024 completions: accuracy + format + tag_count.

The batch imitates an R1-Zero run (the prompt prefills "<think>", so completions start inside the
thinking) on a mix of GSM8K-style integer answers and MATH-style LaTeX answers: correct and wrong
answers written in several forms, a few symbolic answers that need sympy, completions without the
template, reward-hacking attempts and hostile answers (a power tower, 10000!, a 100,000-digit
number, deep nesting, one 1 MB completion). Scoring goes through r1train.scoring.RewardScorer, the
trainer's path.

The first batch includes starting the Math-Verify worker process (it imports sympy and loads the
LaTeX grammar); later batches reuse it. Nothing is cached across batches, so repeated batches
cost what a new batch would.

With --math-verify it also times Math-Verify called directly (`verify(parse(reference),
parse(completion))`, its defaults and its own signal-based timeouts, in the main thread) on the
same completions, and measures how often our accuracy reward and Math-Verify agree on generated
answer/reference pairs of the categories real maths data holds (`math_answer_pairs.py`).

    .venv/bin/python benchmarks/bench_rewards.py [--repeats 5] [--math-verify] [--pairs 2000]
    .venv/bin/python benchmarks/bench_rewards.py --code [--workers 4]   # the sandboxed code reward
"""
from __future__ import annotations

import argparse
import collections
import multiprocessing
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


def _math_verify_child(connection, completions: list[str], answers: list[str]) -> None:
    """Score each completion with Math-Verify's defaults and send (index, score, seconds)."""
    import logging

    from math_verify import parse, verify

    logging.disable(logging.WARNING)  # its per-answer timeout warnings
    for index, (completion, answer) in enumerate(zip(completions, answers)):
        start = time.perf_counter()
        score = float(verify(parse(answer), parse(completion)))
        connection.send((index, score, time.perf_counter() - start))


def time_math_verify_directly(completions: list[str], answers: list[str], hang_s: float = 20.0) -> dict:
    """Math-Verify called directly on the same completions, one after the other.

    It runs in a child process because its signal-based timeout cannot interrupt a computation
    inside one C call (9^{9^{9^{9}}} is one): a completion that gives no result within `hang_s`
    is counted as hung, the child is killed, and a new one carries on with the next completion.
    Returns the summed seconds of the completions that finished, their count, the hung indices
    and the scores (None where hung).
    """
    context = multiprocessing.get_context("spawn")
    scores: list[float | None] = [None] * len(completions)
    seconds, hung, start_at = 0.0, [], 0
    while start_at < len(completions):
        parent, child = context.Pipe()
        process = context.Process(target=_math_verify_child,
                                  args=(child, completions[start_at:], answers[start_at:]), daemon=True)
        process.start()
        expected = start_at
        first = True
        while expected < len(completions):
            # The first answer also waits for the child to import Math-Verify.
            if not parent.poll(hang_s + (60 if first else 0)):
                hung.append(expected)
                break
            index, score, took = parent.recv()
            scores[start_at + index] = score
            seconds += took
            expected, first = start_at + index + 1, False
        process.kill()
        process.join()
        start_at = expected + 1 if expected < len(completions) else expected
    return {"seconds": seconds, "finished": len(completions) - len(hung), "hung": hung, "scores": scores}


def _math_verify_pair(answer: str, reference: str) -> bool:
    from math_verify import parse, verify

    # Both strings as LaTeX maths, the way a MATH reference is written.
    return bool(verify(parse(f"${reference}$"), parse(f"${answer}$")))


def agreement_with_math_verify(count: int) -> None:
    """Ours against Math-Verify called directly on `count` generated pairs; prints per category
    the agreement and how often each side scores as the pair was meant (right or wrong)."""
    import logging

    from math_answer_pairs import make_pairs  # benchmarks/ is on sys.path when run as a script
    from rewards.equivalence import answers_match
    from rewards.math_client import shared_client

    logging.disable(logging.WARNING)
    pairs = make_pairs(count)
    client = shared_client()
    per_category: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    disagreements = []
    for answer, reference, category, intended in pairs:
        ours = answers_match(answer, reference, client, timeout_s=30.0)
        theirs = _math_verify_pair(answer, reference)
        counts = per_category[category]
        counts["pairs"] += 1
        counts["agree"] += ours == theirs
        counts["ours_as_meant"] += ours == intended
        counts["theirs_as_meant"] += theirs == intended
        if ours != theirs:
            disagreements.append((category, answer, reference, intended, ours, theirs))
    total = collections.Counter()
    print(f"agreement on {len(pairs)} generated pairs (right and wrong answers of each category):")
    print(f"  {'category':34s} {'pairs':>5s} {'agree':>6s} {'ours as meant':>14s} {'MV as meant':>12s}")
    for category, counts in per_category.items():
        total.update(counts)
        print(f"  {category:34s} {counts['pairs']:5d} {counts['agree'] / counts['pairs']:6.1%} "
              f"{counts['ours_as_meant'] / counts['pairs']:14.1%} {counts['theirs_as_meant'] / counts['pairs']:12.1%}")
    print(f"  {'all':34s} {total['pairs']:5d} {total['agree'] / total['pairs']:6.1%} "
          f"{total['ours_as_meant'] / total['pairs']:14.1%} {total['theirs_as_meant'] / total['pairs']:12.1%}")
    seen = set()
    for category, answer, reference, intended, ours, theirs in disagreements:
        if (category, intended, ours) not in seen:  # one example of each kind of disagreement
            seen.add((category, intended, ours))
            print(f"  differ [{category}] answer {answer!r} reference {reference!r}: meant "
                  f"{'right' if intended else 'wrong'}, ours {ours}, Math-Verify {theirs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--math-verify", action="store_true", help="also time Math-Verify directly and compare")
    parser.add_argument("--pairs", type=int, default=2000)
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
    if args.math_verify:
        ours = result.per_function["accuracy"]
        direct = time_math_verify_directly(completions, answers)
        print(f"Math-Verify directly on the same {len(completions)} completions: {direct['seconds']:.3f} s "
              f"summed over the {direct['finished']} that finished; hung (no result in 20 s, killed): "
              f"{len(direct['hung'])} {[completions[i][-60:][:40] for i in direct['hung']]}")
        both = [(a, b) for a, b in zip(ours, direct["scores"]) if b is not None]
        print(f"  same score on {sum(a == b for a, b in both)}/{len(both)} completions; accuracy ours "
              f"{sum(a or 0 for a, _ in both) / len(both):.3f}, Math-Verify {sum(b for _, b in both) / len(both):.3f}")
        agreement_with_math_verify(args.pairs)


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
