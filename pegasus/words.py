"""Words in Pegasus's messages, in one place: counted nouns ("1 job", "2 jobs",
"1 entry"), text on one line."""

from __future__ import annotations

from typing import Optional


def plural(count: int, one: str, many: Optional[str] = None) -> str:
    """``count`` and the noun that goes with it (``many`` defaults to ``one + "s"``)."""
    return f"{count} {one if count == 1 else (many or one + 's')}"


def one_line(text: str, limit: Optional[int] = None) -> str:
    """``text`` on one line (newlines shown as \\n), shortened to ``limit``."""
    flat = text.replace("\r", "\\r").replace("\n", "\\n")
    if limit is not None and len(flat) > limit:
        flat = flat[:limit - 1] + "\u2026"
    return flat
