"""The accuracy reward: is the final answer mathematically equal to the reference answer?

The answer is cut out of the completion by `rewards.extraction` (which refuses answers inside the
thinking, several different answers and empty answers) and compared by `rewards.equivalence`
with Hugging Face's Math-Verify, in a worker process with a time limit per sample. The reference
may be a plain answer, a GSM8K solution ending in "#### 72" or a MATH solution with a `\\boxed{}`.
Identical (answer, reference) pairs within a batch are compared once: the completions of one
GRPO group often agree. A sample whose reference is None is not judged (None).
"""
from __future__ import annotations

from rewards.equivalence import answers_match
from rewards.extraction import boxed_answer, reference_answer, tagged_answer
from rewards.registry import RewardFunction, register
from rewards.math_client import shared_client

ANSWER_SOURCES = {"answer": tagged_answer, "boxed": boxed_answer}


@register("accuracy", factory=True, columns=("answer",))
def get_accuracy_reward(answer_source: str = "answer", timeout_s: float = 5.0, exact: bool = False) -> RewardFunction:
    """Build the accuracy reward.

    Args:
        answer_source: "answer" takes the final `<answer>…</answer>` (a `\\boxed{}` inside it is
            the answer); "boxed" the last `\\boxed{}` after the thinking.
        timeout_s: the most time one sample may spend in Math-Verify; past it the sample scores 0
            (5 s: Math-Verify's own default).
        exact: the answer must be the reference itself (surrounding whitespace aside): "20" for 20,
            not "8 + 12 = 20" nor "The answer is 20", which the mathematical comparison accepts.
            For tasks whose answers have one written form (toy arithmetic), where it keeps the
            working in the thinking and the final answer alone in the answer block.
    """
    if answer_source not in ANSWER_SOURCES:
        raise ValueError(f"answer_source must be one of {sorted(ANSWER_SOURCES)}, got {answer_source!r}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
    extract = ANSWER_SOURCES[answer_source]

    def accuracy_reward(completions: list[str], **columns) -> list[float | None]:
        """1.0 when the final answer equals the column `answer` mathematically, else 0.0.

        Args:
            completions: N completion texts.
            columns: must hold `answer`, N reference answers (None: sample not judged), each a
                plain answer ("72", "x \\geq 5"), a GSM8K solution ("... #### 72") or a MATH
                solution (its last `\\boxed{}` is the answer).
        Returns:
            N scores in {0.0, 1.0}, or None where the reference is None.

        Example (answer_source="answer"):
            accuracy_reward(
                ["<think>half of 1</think><answer>\\frac{1}{2}</answer>",  # 1.0: 1/2 == 0.5
                 "<think>...</think><answer>0.5 or 1</answer>",            # 0.0: two answers
                 "<think><answer>0.5</answer></think>"],                   # 0.0: only in the thinking
                answer=["0.5", "0.5", "0.5"],
            ) == [1.0, 0.0, 0.0]
        """
        if "answer" not in columns:
            raise KeyError("the accuracy reward needs a dataset column named 'answer'")
        references = columns["answer"]
        if len(references) != len(completions):
            raise ValueError(f"{len(completions)} completions but {len(references)} answers")
        client = shared_client()
        known: dict[tuple[str, str], float] = {}
        scores: list[float | None] = []
        for completion, reference in zip(completions, references):
            if reference is None:
                scores.append(None)
                continue
            answer = extract(completion)
            if answer is None:
                scores.append(0.0)
                continue
            key = (answer, str(reference))
            if exact:
                scores.append(float(answer.strip() == reference_answer(str(reference)).strip()))
                continue
            if key not in known:
                known[key] = float(answers_match(answer, str(reference), client, timeout_s))
            scores.append(known[key])
        return scores

    return accuracy_reward


accuracy_reward = get_accuracy_reward()
