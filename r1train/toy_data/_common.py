"""What the toy-data generators share: the row and expression-tree types, exact operator
functions, and `_draw_distinct`, which draws distinct questions and fails rather than loops when the
parameters cannot give as many as asked."""
from __future__ import annotations

from typing import Any, Callable, Union

Row = dict[str, Any]
Tree = Union[int, tuple[str, "Tree", "Tree"]]  # a number, or (operator, left, right)

_APPLY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
}
_MAX_DRAWS_PER_ROW = 1_000  # a request the parameters cannot meet fails instead of looping


def _draw_distinct(draw: Callable[[], Any], count: int) -> list[Any]:
    """`count` distinct results of `draw()`, in the order first drawn."""
    seen: dict[Any, None] = {}
    for _ in range(max(count, 1) * _MAX_DRAWS_PER_ROW):
        if len(seen) == count:
            break
        seen.setdefault(draw(), None)
    if len(seen) < count:
        raise ValueError(f"found only {len(seen)} distinct rows of the {count} asked; widen the ranges")
    return list(seen)
