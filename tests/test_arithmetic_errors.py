"""scripts/arithmetic_errors.py: the kind of each arithmetic question (carry, borrow) and the
accuracy table it prints from `r1train eval --out` files."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import arithmetic_errors  # noqa: E402


@pytest.mark.parametrize("question, kind", [
    ("What is 13 + 4?", "sum, no carry"),
    ("What is 7 + 5?", "sum, carry"),
    ("What is 15 + 5?", "sum, carry"),      # 5 + 5 carries a ten
    ("What is 17 - 4?", "difference, no borrow"),
    ("What is 7 - 7?", "difference, no borrow"),
    ("What is 12 - 5?", "difference, borrow"),
    ("What is 20 - 1?", "difference, borrow"),
])
def test_kind_of_a_question(question, kind):
    assert arithmetic_errors.kind_of(question) == kind


def test_a_question_without_arithmetic_is_an_error():
    with pytest.raises(ValueError, match="not an arithmetic question"):
        arithmetic_errors.kind_of("What is the capital of France?")


def test_accuracy_is_over_every_sample_of_a_kind():
    examples = [
        {"question": "What is 12 - 5?", "correct": [1.0, 0.0, 0.0, 0.0]},
        {"question": "What is 11 - 3?", "correct": [1.0, 1.0, 1.0, 1.0]},
        {"question": "What is 2 + 3?", "correct": [1.0, 1.0, 0.0, 1.0]},
    ]
    table = arithmetic_errors.accuracy_by_kind(examples)
    assert table["difference, borrow"] == (2, 5 / 8)
    assert table["sum, no carry"] == (1, 3 / 4)
    count, accuracy = table["sum, carry"]
    assert count == 0 and accuracy != accuracy  # no question of that kind: NaN, not 0


def test_main_prints_one_column_per_file(tmp_path, capsys):
    for name, correct in (("seed0", [1.0, 1.0]), ("seed1", [0.0, 1.0])):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"metrics": {}, "examples": [{"question": "What is 14 - 6?", "correct": correct}]}))
    assert arithmetic_errors.main([str(tmp_path / "seed0.json"), str(tmp_path / "seed1.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| kind | questions | seed0 | seed1 |"
    assert "| difference, borrow | 1 | 1.000 | 0.500 |" in lines


def test_a_file_without_examples_is_named_in_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "metrics_only.json"
    bad.write_text(json.dumps({"metrics": {"eval/accuracy": 0.5}}))
    assert arithmetic_errors.main([str(bad)]) == 2
    error = capsys.readouterr().err.strip()
    assert "metrics_only.json" in error and "r1train eval --out" in error and "\n" not in error


def test_files_of_one_name_from_two_folders_get_their_folder_in_the_heading():
    assert arithmetic_errors.column_names([Path("a/seed0.json"), Path("b/seed0.json"), Path("b/seed1.json")]) == [
        "a/seed0", "b/seed0", "seed1"]
