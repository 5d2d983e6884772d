"""Rejection sampling: k completions per prompt from the current model, keep the good ones as SFT data.

For each prompt of data.train (the first `rejection.max_prompts` of a seeded shuffle), the rollout
engine samples `rejection.samples` completions with the recipe's prompt template and sampling
settings, the recipe's rewards score them, and a completion is kept when it passes every filter,
checked in this order (the first one failed is the reason counted in stats.json):

1. `reward:<name>`: every reward named in `rejection.require` scores 1.0 (the default,
   `[accuracy, format]`, means a correct answer in the strict `<think>/<answer>` format);
2. `language`: with `rejection.language`, language consistency of at least 0.9;
3. `too_long`: at most `rejection.max_completion_tokens` completion tokens;
4. `duplicate`: a text already kept for the same prompt (whitespace at the ends ignored);
5. `max_per_prompt`: at most `rejection.max_per_prompt` per prompt, shorter completions first.

Each kept row holds the source row's columns, `question`, `answer`, `completion` (the whole
assistant response: the template's prefill, e.g. `<think>\\n` for r1_zero, plus what the model
wrote, so that SFT with the r1_chat template reproduces it), `source_prompt` (the rendered prompt),
`rewards` (every reward's score) and `stage`. stats.json reports the acceptance rate overall and
by difficulty: the share of a prompt's k samples that pass the `require` rewards. When no sample
passes, the dataset is still written, empty, and the stage says so: an SFT stage after it then
trains on the other files of its data.mix, or stops with a one-line error when there are none.

Work is saved prompt chunk by prompt chunk (`progress.jsonl`), so an interrupted stage continues
where it stopped; chunks written under other settings are ignored. Deliberate simplification:
a resumed stage samples its remaining chunks from a fresh random state, so its output can differ
from an uninterrupted run's (it is still a valid rejection sample).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from r1train.config import Recipe
from r1train.data import PromptSampler, load_data, write_rows
from r1train.engines.base import SamplingSettings
from r1train.errors import RunError
from r1train.prompts import encode_all, prefill, render_prompt
from r1train.engines import engine_from_recipe, generation_model
from r1train.seeding import seed_everything
from r1train.threads import set_threads
from r1train.scoring import reward_columns

LANGUAGE_THRESHOLD = 0.9
# Difficulty buckets by the share of a prompt's samples that are correct: (upper bound, label).
BUCKETS = ((0.0, "0"), (0.25, "(0,0.25]"), (0.5, "(0.25,0.5]"), (0.75, "(0.5,0.75]"), (1.0 - 1e-9, "(0.75,1)"),
           (1.0, "1"))


def difficulty_bucket(correct_share: float) -> str:
    """The bucket label of a prompt whose samples are correct with this share (0 to 1)."""
    return next(label for upper, label in BUCKETS if correct_share <= upper)


def judge_group(texts: list[str], tokens: list[int], failed: list[str | None],
                max_completion_tokens: int | None, max_per_prompt: int) -> list[str]:
    """The verdict on each of one prompt's samples: "kept" or the first filter it failed.

    Args:
        texts: the k completion texts.
        tokens: their lengths in tokens.
        failed: per sample, the reward filter it already failed ("reward:<name>", "language") or None.
        max_completion_tokens: length limit, None for none.
        max_per_prompt: most samples kept.

    Returns:
        k verdicts: "kept", one of the reasons in `failed`, "too_long", "duplicate" or "max_per_prompt".
    """
    verdicts = list(failed)
    for i, verdict in enumerate(verdicts):
        if verdict is None and max_completion_tokens is not None and tokens[i] > max_completion_tokens:
            verdicts[i] = "too_long"
    seen: set[str] = set()
    kept = 0
    for i in sorted(range(len(texts)), key=lambda i: (tokens[i], i)):  # shortest first
        if verdicts[i] is not None:
            continue
        key = texts[i].strip()
        if key in seen:
            verdicts[i] = "duplicate"
        elif kept >= max_per_prompt:
            verdicts[i] = "max_per_prompt"
        else:
            seen.add(key)
            kept += 1
            verdicts[i] = "kept"
    return verdicts


def run_rejection_sampling(recipe: Recipe, stage_dir: Path, model_name: str, stage_name: str | None = None) -> Path:
    """Sample, filter and write the dataset; returns its path (stage_dir/dataset.jsonl or .parquet)."""
    from r1train.scoring import build_scorer

    cfg, rj, data = recipe, recipe.rejection, recipe.data
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    set_threads(cfg.training.threads)
    rows = load_data(data, "train", (data.question_column,))
    count = min(rj.max_prompts or len(rows), len(rows))
    rows = PromptSampler(rows, cfg.seed, data.shuffle).next_batch(count)
    # Before loading the model: a bad reward fails fast.
    scorer = build_scorer(cfg.rewards, cfg.rollout.max_new_tokens)
    language_fn = _language_reward(rj.language) if rj.language else None

    size = cfg.rollout.prompts_per_step
    chunks = [rows[start:start + size] for start in range(0, count, size)]
    progress_path = stage_dir / "progress.jsonl"
    fingerprint = _fingerprint(cfg, model_name)
    done = _read_progress(progress_path, fingerprint)
    todo = [i for i in range(len(chunks)) if i not in done]
    if todo:
        from tqdm.auto import tqdm

        from r1train.models import load_model, load_tokenizer, resolve_model_dir

        model_dir = resolve_model_dir(model_name)
        tokenizer = load_tokenizer(model_dir)
        model = generation_model(cfg, load_model(model_dir).eval())
        prompt_ids = encode_all(tokenizer, rows, data.question_column, data.prompt_template, data.system_prompt,
                                data.max_prompt_tokens, getattr(model.config, "max_position_embeddings", None),
                                cfg.rollout.max_new_tokens)
        engine = engine_from_recipe(cfg, model, model_dir, tokenizer)
        sampling = SamplingSettings(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                                    top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k, stop=list(cfg.rollout.stop))
        bar = tqdm(total=count, initial=count - sum(len(chunks[i]) for i in todo), unit="prompt",
                   desc=f"{stage_dir.name}: rejection sampling", disable=not cfg.logging.progress)
        try:
            for index in todo:
                chunk_ids = prompt_ids[index * size:(index + 1) * size]
                result = _sample_chunk(cfg, chunks[index], chunk_ids, engine, tokenizer, sampling, scorer,
                                       language_fn, stage_name or stage_dir.name)
                done[index] = result
                with progress_path.open("a") as f:
                    f.write(json.dumps({"fingerprint": fingerprint, "chunk": index, **result}) + "\n")
                bar.update(len(chunks[index]))
        finally:
            bar.close()
            engine.close()

    kept_rows = [row for i in range(len(chunks)) for row in done[i]["rows"]]
    prompt_stats = [p for i in range(len(chunks)) for p in done[i]["prompts"]]
    output = stage_dir / f"dataset.{rj.output_format}"
    stats = summarize(prompt_stats, rj.samples)
    stats.update(model=model_name, output=str(output))
    (stage_dir / "stats.json").write_text(json.dumps(stats, indent=2))
    print(format_stats(stats), flush=True)
    if not kept_rows:
        print(f"r1train: rejection sampling kept no sample: {output} is an empty dataset. An SFT stage that trains "
              "on it uses only the other files of its data.mix; to keep samples, raise rejection.samples or "
              "rejection.max_prompts, or relax rejection.require", flush=True)
    write_rows(kept_rows, output)
    return output


def _sample_chunk(cfg: Recipe, rows: list[dict[str, Any]], prompt_ids: list[list[int]], engine, tokenizer,
                  sampling: SamplingSettings, scorer, language_fn, stage_name: str) -> dict[str, list]:
    """Generate, score and filter one chunk of prompts; returns its kept rows and per-prompt stats."""
    data, rj, k = cfg.data, cfg.rejection, cfg.rejection.samples
    prompt_texts = [render_prompt(tokenizer, r[data.question_column], data.prompt_template, data.system_prompt)
                    for r in rows]
    completions = engine.generate(prompt_ids, k, sampling)
    texts = [prefill(data.prompt_template) + c.text for c in completions]
    columns = reward_columns(rows, completions, data.answer_column)
    tokens = columns["completion_tokens"]
    result = scorer.score(texts, [rows[c.prompt_index][data.question_column] for c in completions], columns)
    missing = [name for name in rj.require if name not in result.per_function]
    if missing:
        raise RunError(f"rejection.require names {', '.join(missing)}, which the recipe's rewards do not "
                       f"compute (rewards: {', '.join(result.per_function)})")
    language = language_fn(texts, **columns) if language_fn else None

    failed: list[str | None] = []
    for i in range(len(texts)):
        reason = next((f"reward:{name}" for name in rj.require if not _is_one(result.per_function[name][i])), None)
        if reason is None and language is not None and (language[i] or 0.0) < LANGUAGE_THRESHOLD:
            reason = "language"
        failed.append(reason)

    kept_rows, prompts = [], []
    for p, row in enumerate(rows):
        group = range(p * k, (p + 1) * k)  # completions come grouped by prompt
        verdicts = judge_group([texts[i] for i in group], [tokens[i] for i in group], [failed[i] for i in group],
                               rj.max_completion_tokens, rj.max_per_prompt)
        correct = sum(not (failed[i] or "").startswith("reward:") for i in group)
        prompts.append({"correct_share": correct / k, "verdicts": dict(Counter(verdicts))})
        for i, verdict in zip(group, verdicts):
            if verdict == "kept":
                kept_rows.append({
                    **row, "question": row[data.question_column], "answer": row.get(data.answer_column),
                    "completion": texts[i], "completion_tokens": tokens[i], "source_prompt": prompt_texts[p],
                    "rewards": {name: values[i] for name, values in result.per_function.items()},
                    "stage": stage_name,
                })
    return {"rows": kept_rows, "prompts": prompts}


def summarize(prompt_stats: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """Acceptance overall and by difficulty bucket, and how many samples each filter rejected."""
    verdicts: Counter = Counter()
    buckets = {label: {"prompts": 0, "samples": 0, "kept": 0} for _, label in BUCKETS}
    for prompt in prompt_stats:
        verdicts.update(prompt["verdicts"])
        bucket = buckets[difficulty_bucket(prompt["correct_share"])]
        bucket["prompts"] += 1
        bucket["samples"] += k
        bucket["kept"] += prompt["verdicts"].get("kept", 0)
    for bucket in buckets.values():
        bucket["acceptance_rate"] = bucket["kept"] / bucket["samples"] if bucket["samples"] else None
    samples = len(prompt_stats) * k
    kept = verdicts.pop("kept", 0)
    return {
        "prompts": len(prompt_stats), "samples_per_prompt": k, "samples": samples, "kept": kept,
        "acceptance_rate": kept / samples if samples else 0.0,
        "prompts_with_kept": sum(1 for p in prompt_stats if p["verdicts"].get("kept")),
        "rejected": dict(sorted(verdicts.items())), "by_difficulty": buckets,
    }


def format_stats(stats: dict[str, Any]) -> str:
    lines = [f"rejection sampling: {stats['prompts']} prompts x {stats['samples_per_prompt']} samples, kept "
             f"{stats['kept']} of {stats['samples']} ({100 * stats['acceptance_rate']:.1f}%)",
             f"{'share correct':<14} {'prompts':>8} {'samples':>8} {'kept':>6} {'accepted':>9}"]
    for label, b in stats["by_difficulty"].items():
        rate = "–" if b["acceptance_rate"] is None else f"{100 * b['acceptance_rate']:.1f}%"
        lines.append(f"{label:<14} {b['prompts']:>8} {b['samples']:>8} {b['kept']:>6} {rate:>9}")
    rejected = ", ".join(f"{reason} {n}" for reason, n in stats["rejected"].items())
    lines.append(f"rejected: {rejected or 'none'}")
    return "\n".join(lines)


def _is_one(score: float | None) -> bool:
    return score is not None and score >= 1.0 - 1e-6


def _language_reward(language: str):
    from rewards import get_reward

    return get_reward("language_consistency", language=language)


def _fingerprint(cfg: Recipe, model_name: str) -> str:
    """What the chunks depend on; progress written under other settings is not reused."""
    key = {"model": model_name, "seed": cfg.seed, "data": dataclasses.asdict(cfg.data),
           "rollout": dataclasses.asdict(cfg.rollout), "rewards": [dataclasses.asdict(r) for r in cfg.rewards],
           "rejection": dataclasses.asdict(cfg.rejection)}
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_progress(path: Path, fingerprint: str) -> dict[int, dict[str, list]]:
    """Chunks finished under these settings. Other lines (other settings, or one cut short by a
    crash) are dropped from the file, so the next append starts on a line of its own."""
    done: dict[int, dict[str, list]] = {}
    if not path.is_file():
        return done
    lines = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("fingerprint") == fingerprint:
            lines.append(line)
            done[entry["chunk"]] = {"rows": entry["rows"], "prompts": entry["prompts"]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(path)
    return done
