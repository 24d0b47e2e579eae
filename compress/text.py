"""Bounded text for messages: a user value is quoted by a short prefix, never whole."""

from __future__ import annotations

from typing import Any

LIMIT = 60


def short(value: Any, limit: int = LIMIT) -> str:
    """`repr(value)` cut to `limit` characters, without ever building the whole repr of a huge value."""
    if isinstance(value, (list, tuple, dict, set)) and _size_over(value, limit):
        kind = type(value).__name__
        return f"<{kind} of {len(value)} items>"
    text = repr(value) if not isinstance(value, str) else repr(value[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _size_over(value: Any, limit: int) -> bool:
    """True when a container holds more than `limit` leaves (counted lazily, so an alias bomb stays cheap)."""
    count = 0
    stack = [value]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)
    return False
