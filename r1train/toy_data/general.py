"""General prompts for the second RL stage: every instruction template with every topic, with no
numbers and no reference answer, in a seeded order."""
from __future__ import annotations

import random

from r1train.toy_data._common import Row


GENERAL_TEMPLATES = (
    "Write one sentence about {topic}.",
    "Give two facts about {topic}.",
    "Describe {topic} in three words.",
    "Explain {topic} to a child in two sentences.",
    "Write a four-line poem about {topic}.",
)
GENERAL_TOPICS = (
    "the sea", "mountains", "rain", "the moon", "bread", "trees", "a city at night", "winter",
    "music", "bicycles", "libraries", "bees", "the desert", "friendship", "clocks", "volcanoes",
    "gardens", "trains", "the wind", "coffee",
)


def make_general_prompts(seed: int, templates: tuple[str, ...] = GENERAL_TEMPLATES,
                         topics: tuple[str, ...] = GENERAL_TOPICS, name: str = "general") -> list[Row]:
    """Every template with every topic ({"question": ...} rows, no answer), in a seeded order."""
    rows = [{"question": template.format(topic=topic)} for template in templates for topic in topics]
    random.Random(f"{seed}-{name}").shuffle(rows)
    return rows
