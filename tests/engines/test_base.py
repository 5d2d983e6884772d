"""The completion text every engine returns: decoded tokens, cut right after a stop string."""
import pytest

from r1train.engines.base import decode_completion


@pytest.mark.parametrize("text, stop, expected", [
    # The last token completed the stop string and carried more characters: they are cut.
    ("<answer>5</answer></", ["</answer>"], "<answer>5</answer>"),
    ("<answer>5</answer>\n\nMore", ["</answer>"], "<answer>5</answer>"),
    # No stop string reached (truncated or EOS): the text stays whole.
    ("<answer>5", ["</answer>"], "<answer>5"),
    # Several stop strings: the earliest end wins.
    ("a STOP b END", ["END", "STOP"], "a STOP"),
    # No stop strings at all.
    ("anything</answer>x", [], "anything</answer>x"),
])
def test_text_ends_with_the_first_stop_string(tokenizer, text, stop, expected):
    token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert decode_completion(tokenizer, token_ids, stop) == expected


def test_special_tokens_are_skipped(tokenizer):
    token_ids = tokenizer("<answer>5</answer>", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert decode_completion(tokenizer, token_ids, ["</answer>"]) == "<answer>5</answer>"
