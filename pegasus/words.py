"""Counted nouns in Pegasus's messages, in one place: "1 job", "2 jobs", "1 entry"."""

from __future__ import annotations

from typing import Optional


def plural(count: int, one: str, many: Optional[str] = None) -> str:
    """``count`` and the noun that goes with it (``many`` defaults to ``one + "s"``)."""
    return f"{count} {one if count == 1 else (many or one + 's')}"
