"""The `r1train` command line: run, validate, eval, data, report, rollout-workers.

Every user error (bad recipe, missing file, unknown reward) ends in one line on stderr and exit
code 2, before any work starts; training failures end with exit code 1, and a run stopped by
SIGINT/SIGTERM with a non-zero code and a line saying how to resume.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from r1train.errors import INTERRUPTED_EXIT, USAGE_ERROR_EXIT, USER_ERRORS

    if not getattr(args, "command", None):
        parser.print_help()
        return USAGE_ERROR_EXIT
    try:
        return args.func(args) or 0
    except USER_ERRORS as exc:
        # One line, however the message was built (a YAML problem or a library's text may hold newlines).
        print(f"r1train: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return USAGE_ERROR_EXIT
    except KeyboardInterrupt:  # a second Ctrl-C during a run, or one outside the training loop
        hint = "; run the same command again to resume from the last checkpoint" if args.command == "run" else ""
        print(f"r1train: interrupted{hint}", file=sys.stderr)
        return INTERRUPTED_EXIT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r1train", description="Reproduce DeepSeek-R1: GRPO, rejection sampling, SFT and distillation from one recipe.")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run a recipe (all its stages, or one GRPO run)")
    run.add_argument("recipe", help="recipe YAML file")
    run.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                     help="override recipe keys, e.g. --set training.steps=10 seed=1 (repeatable)")
    group = run.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="resume from the run folder's last checkpoint (the default when one exists); "
                            "fail if there is nothing to resume")
    group.add_argument("--fresh", action="store_true", help="delete the run folder and start over")
    run.add_argument("--from", dest="from_stage", metavar="STAGE", help="rerun the pipeline from this stage on")
    run.set_defaults(func=_cmd_run)

    validate = sub.add_parser("validate", help="check a recipe without running it and print the effective config")
    validate.add_argument("recipe")
    validate.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE")
    validate.set_defaults(func=_cmd_validate)

    evaluate = sub.add_parser("eval", help="evaluate a model on a dataset of questions and answers")
    evaluate.add_argument("--model", required=True, help="model folder, alias or hub id")
    evaluate.add_argument("--data", required=True,
                          help="a .jsonl/.json/.parquet file, a dataset folder or a hub dataset id with `question` "
                               "and `answer` columns (or the recipe's data.question_column / answer_column)")
    evaluate.add_argument("--subset", help="the hub dataset's configuration (default: the recipe's data.subset)")
    evaluate.add_argument("--split", help="the split to evaluate (default: the recipe's data.eval_split, else test)")
    evaluate.add_argument("--samples", type=int, default=4, help="k samples per question (default 4)")
    evaluate.add_argument("--out", help="write the results as JSON to this file")
    evaluate.add_argument("--recipe", help="take prompt template, rewards and sampling from this recipe")
    evaluate.add_argument("--template", help="prompt template (r1_zero, r1_chat or a string with {question})")
    evaluate.add_argument("--backend", choices=("hf", "vllm"), help="rollout backend (default: the recipe's, else hf)")
    evaluate.add_argument("--max-examples", type=int, help="evaluate only the first N rows")
    evaluate.add_argument("--max-new-tokens", type=int, help="completion length limit")
    evaluate.add_argument("--temperature", type=float, default=1.0)
    evaluate.add_argument("--by", metavar="COLUMN",
                          help="also report accuracy per value of this data column (e.g. level, op)")
    evaluate.add_argument("--no-think", action="store_true",
                          help="also sample with the thinking forced empty ('<think>\\n</think>\\n<answer>' "
                               "prefilled) and report the accuracy the thinking adds (thinking_gain)")
    evaluate.set_defaults(func=_cmd_eval)

    data = sub.add_parser("data", help="generate the toy datasets, or describe a data file")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    make = data_sub.add_parser("make", help="(re)generate the toy math datasets")
    make.add_argument("--out", default="data", help="output folder (default: data)")
    make.add_argument("--seed", type=int, default=0)
    make.set_defaults(func=_cmd_data_make)
    describe = data_sub.add_parser("describe", help="row count, columns and an example of a data file")
    describe.add_argument("path")
    describe.set_defaults(func=_cmd_data_describe)

    workers = sub.add_parser("rollout-workers", help="start `vllm serve` rollout workers for rollout.placement: remote")
    workers.add_argument("--model", required=True, help="the model folder (or alias) the run starts from")
    workers.add_argument("--workers", type=int, default=1, help="how many workers (default 1)")
    workers.add_argument("--port", type=int, default=8001, help="first worker's port; the others follow (default 8001)")
    workers.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    workers.add_argument("--max-model-len", type=int, default=2048, help="longest prompt + completion (default 2048)")
    workers.add_argument("--dtype", default="bfloat16", help="the workers' weight dtype (default bfloat16)")
    workers.add_argument("--kv-cache-gib", type=float, default=1.0, help="CPU only: KV cache per worker (default 1)")
    workers.add_argument("--gpus", help="GPU ids, one per worker (default 1..N: GPU 0 is left to the learner)")
    workers.add_argument("--timeout", type=float, default=600, help="seconds to wait for the workers (default 600)")
    workers.add_argument("--log-dir", default="rollout_workers", help="folder for the workers' logs")
    workers.set_defaults(func=_cmd_rollout_workers)

    report = sub.add_parser("report", help="write plots and a markdown summary for a run folder; given several "
                                           "runs of one recipe (seeds), their mean, spread and a row per run")
    report.add_argument("run_dirs", nargs="+", metavar="run_dir")
    report.add_argument("--out", help="folder for a report over several runs (default: <runs>/seeds_report)")
    report.set_defaults(func=_cmd_report)
    return parser


def _cmd_validate(args) -> int:
    from r1train.config import load_recipe, to_yaml
    from r1train.validation import check_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    notes = check_recipe(recipe)
    print(to_yaml(recipe), end="")
    for note in notes:
        print(f"# {note}")
    print(f"# {args.recipe}: valid", file=sys.stderr)
    return 0


def _cmd_run(args) -> int:
    from r1train.config import load_recipe
    from r1train.errors import RunError
    from r1train.pipeline import has_progress, run_recipe
    from r1train.validation import check_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    check_recipe(recipe)
    if args.resume and not has_progress(recipe.run_dir):
        raise RunError(f"--resume: {recipe.run_dir} holds no checkpoint or finished stage to resume from; "
                       "run without --resume to start the run")
    return run_recipe(recipe, fresh=args.fresh, from_stage=args.from_stage)


def _cmd_eval(args) -> int:
    from r1train.evaluation import evaluate_cli

    return evaluate_cli(args)


def _cmd_data_make(args) -> int:
    from r1train.toy_data import generate_all

    generate_all(Path(args.out), seed=args.seed)
    return 0


def _cmd_data_describe(args) -> int:
    from r1train.toy_data import describe

    print(describe(Path(args.path)))
    return 0


def _cmd_rollout_workers(args) -> int:
    from r1train.errors import RunError
    from r1train.rollout_workers import rollout_workers_cli

    if args.workers < 1:
        raise RunError("--workers must be at least 1")
    return rollout_workers_cli(args)


def _cmd_report(args) -> int:
    from r1train.errors import RunError
    from r1train.report import write_report
    from r1train.seed_report import write_seed_report

    for run_dir in map(Path, args.run_dirs):
        if not (run_dir / "metrics.jsonl").is_file():
            raise RunError(f"{run_dir} has no metrics.jsonl: give a run folder, e.g. runs/r1_zero_toy")
    if len(args.run_dirs) == 1:
        if args.out:
            raise RunError("--out is for a report over several runs; a single run's report goes into <run>/report")
        print(write_report(Path(args.run_dirs[0])))
    else:
        print(write_seed_report([Path(d) for d in args.run_dirs], Path(args.out) if args.out else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
