"""Language consistency (DeepSeek-R1, section 2.3.3): the share of the chain of thought written in
the target language, which the paper adds to discourage mixing languages inside one reasoning.

Deliberate simplification: the language is judged by its writing system, not by a language model.
A word is a run of letters; it counts as in the target language when its letters belong to the
target's scripts (Latin for "en", Han for "zh", ...). Han, Hiragana and Katakana are written
without spaces, so each of those characters counts as one word. This tells English from Chinese
or Russian, but not English from French; digits, symbols and LaTeX command names are letters only
in so far as they are Latin (so `\\frac` counts as a Latin word, which suits English targets).
"""
from __future__ import annotations

import re
import unicodedata

from rewards.extraction import think_text
from rewards.registry import RewardFunction, register

LANGUAGE_SCRIPTS = {
    "en": {"LATIN"}, "fr": {"LATIN"}, "de": {"LATIN"}, "es": {"LATIN"}, "it": {"LATIN"},
    "pt": {"LATIN"}, "nl": {"LATIN"}, "vi": {"LATIN"}, "id": {"LATIN"}, "tr": {"LATIN"},
    "zh": {"CJK"}, "ja": {"CJK", "HIRAGANA", "KATAKANA"}, "ko": {"HANGUL"},
    "ru": {"CYRILLIC"}, "uk": {"CYRILLIC"}, "ar": {"ARABIC"}, "he": {"HEBREW"},
    "hi": {"DEVANAGARI"}, "el": {"GREEK"}, "th": {"THAI"},
}
_UNSPACED_SCRIPTS = {"CJK", "HIRAGANA", "KATAKANA"}  # one character, one word
_LETTER_RUNS = re.compile(r"[^\W\d_]+")
_ASCII_WORDS = re.compile(r"[A-Za-z]+")


def _script(char: str) -> str:
    name = unicodedata.name(char, "")
    if name.startswith("CJK"):
        return "CJK"
    return name.split(" ", 1)[0]


def word_scripts(text: str) -> list[str]:
    """The script of every word in `text` (see the module docstring for what a word is)."""
    if text.isascii():  # the common case, without a per-word loop
        return ["LATIN"] * len(_ASCII_WORDS.findall(text))
    scripts = []
    for run in _LETTER_RUNS.findall(text):
        if run.isascii():
            scripts.append("LATIN")
            continue
        current = None
        for char in run:
            script = "LATIN" if char.isascii() else _script(char)
            if script in _UNSPACED_SCRIPTS or script != current:
                scripts.append(script)
            current = script
    return scripts


@register("language_consistency", factory=True)
def get_language_consistency_reward(language: str = "en", prefix: str = "") -> RewardFunction:
    """Build the language-consistency reward.

    Args:
        language: target language code, one of LANGUAGE_SCRIPTS.
        prefix: put before each completion before looking for <think> (e.g. "<think>").
    """
    if language not in LANGUAGE_SCRIPTS:
        raise ValueError(f"language must be one of {sorted(LANGUAGE_SCRIPTS)}, got {language!r}")
    target = LANGUAGE_SCRIPTS[language]
    prefix = str(prefix)

    def language_consistency_reward(completions: list[str], **columns) -> list[float | None]:
        """Share of the words inside <think>…</think> written in the target language's script;
        None when there is no chain of thought or it holds no word.

        Args:
            completions: N completion texts.
        Returns:
            N scores in [0, 1], or None.

        Example (language="en"):
            language_consistency_reward(
                ["<think>two plus two</think><answer>4</answer>",  # 1.0
                 "<think>two plus two 二</think><answer>4</answer>",  # 0.75: 3 of 4 words Latin
                 "<answer>4</answer>"],                            # None: no thinking
            ) == [1.0, 0.75, None]
        """
        scores: list[float | None] = []
        for completion in completions:
            thinking = think_text(prefix + completion)
            scripts = word_scripts(thinking) if thinking else []
            if not scripts:
                scores.append(None)
                continue
            scores.append(sum(script in target for script in scripts) / len(scripts))
        return scores

    return language_consistency_reward


language_consistency_reward = get_language_consistency_reward()
