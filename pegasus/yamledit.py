"""Edit the head of a YAML block list as text, keeping every other byte.

Pure functions on the text of a list whose items ``yamltree`` has located:
replace the lines of the first items, or insert entries before the first
item. They return None when the layout cannot be cut by lines (a flow-style
list such as ``[a, b]``); the caller then rewrites the list whole.
"""

from __future__ import annotations

from typing import List, Optional

from pegasus.yamltree import Layout


def replace_head(text: str, layout: Layout, first_line: int, last_line: int,
                 middle: str) -> Optional[str]:
    """Replace the lines from the first item's '-' to `last_line` by `middle`."""
    if not layout.block or layout.empty:
        return None
    starts = _line_starts(text, last_line + 1)
    dash = _dash_line(text, starts, first_line, layout.column)
    if dash is None:
        return None
    end = starts[last_line + 1] if last_line + 1 < len(starts) else len(text)
    return text[:starts[dash]] + middle + text[end:]


def insert_head(text: str, layout: Layout, first_line: Optional[int],
                middle: str) -> Optional[str]:
    """Insert `middle` before the first item (or at the end of an empty list)."""
    if layout.empty or first_line is None:
        if not layout.block:
            return None
        return text + ("\n" if text and not text.endswith("\n") else "") + middle
    if not layout.block:
        return None
    starts = _line_starts(text, first_line)
    dash = _dash_line(text, starts, first_line, layout.column)
    if dash is None:
        return None
    return text[:starts[dash]] + middle + text[starts[dash]:]


def _line_starts(text: str, upto: int) -> List[int]:
    """Offsets of the starts of lines 0..upto (fewer if the text ends first)."""
    starts = [0]
    pos = 0
    while len(starts) <= upto:
        pos = text.find("\n", pos) + 1
        if pos == 0:
            break
        starts.append(pos)
    return starts


def _dash_line(text: str, starts: List[int], line: int, column: int) -> Optional[int]:
    """The line of the '-' that opens the entry whose content starts on `line`."""
    for number in range(min(line, len(starts) - 1), -1, -1):
        begin = starts[number]
        prefix = text[begin:begin + column + 1]
        if len(prefix) == column + 1 and prefix[-1] == "-" and not prefix[:-1].strip():
            return number
    return None
