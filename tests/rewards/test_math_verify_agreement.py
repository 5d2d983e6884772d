"""Agreement of the accuracy reward with the test cases of Math-Verify's public repository.

The cases are data (`data/math_verify_cases.json`, made by scripts/import_math_verify_cases.py
from huggingface/Math-Verify at the commit it records): a gold answer, a prediction and the result
Math-Verify's own tests expect. Each prediction goes through our reward the way a user's data
would: a prediction holding `</think>` is a whole R1-style completion and is scored as it is with
`answer_source: boxed`; any other prediction is the content of the `<answer>` tag.

Where we differ on purpose, the case is listed below with the reason, and the test checks that we
still differ (so the list stays true). CONFIGURATION: the case passes Math-Verify options we do not
use. OUR_RULES: a hack rule of ours decides against Math-Verify's choice.
"""
import json
from pathlib import Path

import pytest

from rewards import get_accuracy_reward

DOCUMENT = json.loads((Path(__file__).parent / "data" / "math_verify_cases.json").read_text())
CASES = DOCUMENT["cases"]

CONFIGURATION = {
    5: "extraction of plain numbers only; `1000,99` with a decimal comma is read by us as two numbers",
    6: "extraction of plain numbers only; `1,22` with a decimal comma is read by us as 122",
    31: "LaTeX-only extraction (a `$` block may not span lines); we also read plain numbers",
    32: "LaTeX-only extraction (a `\\(` block may not span lines); we also read plain numbers",
    133: "float_rounding=2 makes 0.33 equal 1/3; we use a relative tolerance of 1e-4",
    187: "allow_set_relation_comp=False: a relation does not answer a reference set; we allow it",
    195: "strict=False makes f(x) equal f(y); we keep the default (strict)",
}
OUR_RULES = {
    30: "a plain-number reference accepts only a plain number: (9+1) for 10 restates, not answers",
    15: "a sentence naming two numbers (10 and 1,000.99, neither after \"not\"): several answers",
    141: "a worked solution with no boxed or announced answer names several values: several answers",
    142: "a worked solution with no boxed or announced answer names several values: several answers",
    143: "a worked solution with no boxed or announced answer names several values: several answers",
    172: "boxes with different values (200, 255, 10455) in one answer are several answers",
    183: "two different boxes after the thinking (-2 and 1) are several final answers",
}
DIFFERENT = {**CONFIGURATION, **OUR_RULES}


def _completion(prediction: str) -> tuple[str, str]:
    if "</think>" in prediction:
        return "boxed", prediction
    return "answer", f"<answer>{prediction}</answer>"


@pytest.fixture(scope="module")
def our_scores() -> dict[int, float]:
    # One batch per answer source; a generous time limit, so a loaded machine cannot flip a case.
    scores: dict[int, float] = {}
    for source in ("answer", "boxed"):
        rows = [case for case in CASES if _completion(case["pred"])[0] == source]
        reward = get_accuracy_reward(answer_source=source, timeout_s=60.0)
        results = reward([_completion(case["pred"])[1] for case in rows],
                         answer=[case["gold"] for case in rows])
        scores.update({case["id"]: result for case, result in zip(rows, results)})
    return scores


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case['id']}-{case['source'].split('::')[1]}")
def test_case_agrees_unless_listed(case, our_scores):
    agrees = our_scores[case["id"]] == case["expected"]
    assert agrees != (case["id"] in DIFFERENT), DIFFERENT.get(case["id"], "should agree")


def test_agreement_is_at_least_97_percent(our_scores):
    shared = [case for case in CASES if case["id"] not in CONFIGURATION]
    agreeing = sum(our_scores[case["id"]] == case["expected"] for case in shared)
    assert len(CASES) == 269  # the table as imported; a re-import must update the lists above
    assert agreeing / len(shared) >= 0.97, f"{agreeing}/{len(shared)}"
