"""The toy datasets shipped in `data/`, and the generator behind `r1train data make` / `describe`.

`generate_all(out, seed)` writes, as JSONL (one object per line):

- `arithmetic/{train,test}`: "What is 7 + 5?" with operands 0..20, + and -. The R1-Zero task for a
  135M model: easy enough that some samples are right from the start (RL needs that signal),
  hard enough that there is something to learn.
- `arithmetic_2digit/{train,test}`: 2-digit addition, the harder variant.
- `countdown/{train,test}`: the Countdown game of TinyZero with three numbers.
- `cold_start/train`: worked solutions in the R1 template for the cold-start SFT stage.
- `general/train`: short non-math prompts for the second RL stage.
- `code/{train,test}`: function-writing tasks with assert tests, for the `code` reward.
- `multistep/{train,test}`: "What is 14 + 9 - 6?", three operands 1..20, + and -, left to right:
  a task where steps are needed (writing the intermediate result down pays).
- `multistep_small/{train,test}`: the same with operands 1..10, so each step is as hard as one
  question of `arithmetic` and only the chaining is new.

Everything is a function of the seed. Each dataset draws from its own `random.Random`, seeded with
the seed and the dataset's name, so enlarging one never shifts another; files are written with a
fixed key order and `\\n` line ends, atomically, so the same seed gives the same bytes.

Deliberate simplifications:
- A subtraction question never has a negative answer (the larger operand comes first). "3 + 5"
  and "5 + 3" are different questions.
- The test split is drawn first and the train split from the remaining distinct questions, so the
  two never share a question (for Countdown: never the same numbers, in any order, and target).
- The Countdown solver plays by the TV game's rules: every intermediate result is a positive
  integer. Instances it cannot solve that way (only with fractions or negative intermediates)
  are skipped, so every row has an answer a reader can follow step by step.
- Cold-start reasoning comes from a handful of sentence templates, not from a model: enough
  variety that SFT teaches the template rather than one fixed string.

Modules, one job each (everything public is re-exported here, so `from r1train.toy_data import X`
works for all of it):
- `arithmetic`: "What is a op b?" questions (`make_arithmetic`).
- `countdown`: Countdown instances and the solver (`make_countdown`, `solve_countdown`,
  `render_expression`, `evaluate_expression`).
- `cold_start`: worked solutions in the R1 template (`make_cold_start`).
- `general`: short non-math prompts (`make_general_prompts`).
- `code_tasks`: function-writing tasks with tests (`make_code_tasks`, `code_task_row`).
- `multistep`: three-operand chains of + and - (`make_multistep`).
- `files`: writing, reading and describing the files (`generate_all`, `write_jsonl`,
  `read_jsonl`, `describe`).
- `_common`: the row and expression-tree types and helpers the generators share.
"""
from r1train.toy_data._common import Row, Tree
from r1train.toy_data.arithmetic import (
    ARITHMETIC_OPERATORS,
    arithmetic_row,
    count_arithmetic_questions,
    make_arithmetic,
)
from r1train.toy_data.code_tasks import code_task_row, make_code_tasks
from r1train.toy_data.cold_start import make_cold_start
from r1train.toy_data.countdown import (
    countdown_row,
    evaluate_expression,
    make_countdown,
    render_expression,
    solve_countdown,
)
from r1train.toy_data.files import describe, generate_all, read_jsonl, write_jsonl
from r1train.toy_data.general import GENERAL_TEMPLATES, GENERAL_TOPICS, make_general_prompts
from r1train.toy_data.multistep import MULTISTEP_OPERATORS, make_multistep, multistep_row

__all__ = [
    "ARITHMETIC_OPERATORS",
    "GENERAL_TEMPLATES",
    "GENERAL_TOPICS",
    "MULTISTEP_OPERATORS",
    "Row",
    "Tree",
    "arithmetic_row",
    "code_task_row",
    "count_arithmetic_questions",
    "countdown_row",
    "describe",
    "evaluate_expression",
    "generate_all",
    "make_arithmetic",
    "make_code_tasks",
    "make_cold_start",
    "make_countdown",
    "make_general_prompts",
    "make_multistep",
    "multistep_row",
    "read_jsonl",
    "render_expression",
    "solve_countdown",
    "write_jsonl",
]
