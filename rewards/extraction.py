"""Cut a completion into its chain of thought and its final answer, refusing ambiguous answers.

Every scan here is linear in the completion's length (str.find, no backtracking regex), so a
1 MB completion costs milliseconds. The rules that stop reward hacking live here too:

- the answer is looked for only after the last `</think>`; a `<think>` that is never closed means
  the completion is still thinking from there on, so no `<answer>` counts;
- several answer blocks (or several `\\boxed{}`) with different contents are several final answers,
  and none counts; so does a mismatched number of opening and closing answer tags;
- an empty answer is no answer.
"""
from __future__ import annotations

import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)
MAX_FINAL_ANSWERS = 16  # more answer blocks or boxes than this is listing, not answering


def answer_region(text: str) -> str | None:
    """The part of `text` where a final answer may appear, or None while still thinking."""
    close = text.rfind(THINK_CLOSE)
    region = text[close + len(THINK_CLOSE):] if close >= 0 else text
    return None if THINK_OPEN in region else region


def think_text(text: str) -> str | None:
    """The chain of thought: the text between the first `<think>` and the last `</think>`."""
    open_at = text.find(THINK_OPEN)
    close_at = text.rfind(THINK_CLOSE)
    if open_at < 0 or close_at < open_at:
        return None
    return text[open_at + len(THINK_OPEN):close_at]


def tagged_answer(text: str) -> str | None:
    """The content of the final `<answer>…</answer>`, or None when there is no single answer.

    Example: tagged_answer("<think>2+2</think> <answer> 4 </answer>") == "4", while
    tagged_answer("<think><answer>4</answer></think>") is None (the answer is inside the thinking).
    """
    region = answer_region(text)
    if region is None:
        return None
    opened = region.count(ANSWER_OPEN)
    if opened != region.count(ANSWER_CLOSE) or opened > MAX_FINAL_ANSWERS:
        return None
    blocks = _blocks_between(region, ANSWER_OPEN, ANSWER_CLOSE)
    return _single_final(blocks)


def boxed_answer(text: str) -> str | None:
    """The content of the last `\\boxed{…}` after the thinking, or None when there is none or
    several boxes disagree.

    Example: boxed_answer("so $x=\\boxed{\\frac{1}{2}}$") == "\\frac{1}{2}".
    """
    region = answer_region(text)
    if region is None or region.count("\\boxed") > MAX_FINAL_ANSWERS:
        return None
    return _single_final(braced_arguments(region, "\\boxed"))


def reference_answer(reference: str) -> str:
    """The final answer inside a reference as datasets write it.

    GSM8K ends its worked solution with "#### 72"; MATH's solution holds its answer in a
    `\\boxed{}` (the last, when boxes repeat the same answer); a reference whose boxes differ
    (`\\boxed{1}, \\boxed{2}`: several answers) and anything else is taken whole.

    Example: reference_answer("3 + 4 = 7 ... #### 1,072") == "1,072";
    reference_answer("so $x = \\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"; reference_answer(" 5 ") == "5".
    """
    if "\\boxed" in reference:
        boxes = {box.strip() for box in braced_arguments(reference, "\\boxed", max_chars=len(reference))}
        if len(boxes) == 1:
            return boxes.pop()
        return reference.strip()
    marker = reference.rfind("####")
    if marker >= 0:
        return reference[marker + 4:].strip()
    return reference.strip()


def braced_arguments(text: str, command: str, max_chars: int = 20_000) -> list[str]:
    """The brace-delimited argument of every occurrence of `command` (e.g. "\\boxed") in `text`.

    Occurrences whose braces do not close within `max_chars` characters are skipped: no final
    answer is that long, and the bound keeps a megabyte of "{" cheap. Callers cap the number of
    occurrences first (see MAX_FINAL_ANSWERS).
    """
    found = []
    position = text.find(command)
    while position >= 0:
        brace = position + len(command)
        while text.startswith(" ", brace):
            brace += 1
        end = matching_brace(text, brace, max_chars) if text.startswith("{", brace) else -1
        if end >= 0:
            found.append(text[brace + 1:end])
        position = text.find(command, position + len(command))
    return found


def matching_brace(text: str, open_at: int, max_chars: int = 20_000) -> int:
    """Index of the `}` closing the `{` at `open_at`, or -1 when it does not close within
    `max_chars` characters. Escaped braces `\\{ \\}` are skipped."""
    depth = 0
    for match in _BRACE_OR_ESCAPE.finditer(text, open_at, min(len(text), open_at + max_chars)):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return match.start()
    return -1


def _blocks_between(text: str, open_tag: str, close_tag: str) -> list[str]:
    blocks = []
    start = text.find(open_tag)
    while start >= 0:
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:
            break
        blocks.append(text[start + len(open_tag):end])
        start = text.find(open_tag, end + len(close_tag))
    return blocks


def _single_final(blocks: list[str]) -> str | None:
    contents = [block.strip() for block in blocks]
    if not contents or len(set(contents)) > 1:
        return None
    answer = contents[-1]
    if not answer or any(tag in answer for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN)):
        return None
    return answer
