"""Sub-node names written compactly: ``node-[1-37,40-50]`` (ClusterShell's node sets).

Pure. ``fold`` (and its parts, ``families``); names that differ in nothing but their last number
share a bracket, consecutive numbers a range. A zero-padded number keeps
its width (``node[01-10]``); ``node1`` and ``node01`` are different names.
A name with parameters (``node-1 (gpu=0)``) or without a number is kept whole.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Tuple

_LAST_NUMBER = re.compile(r"^(.*?)(\d+)(\D*)$")


def fold(names: Iterable[str]) -> str:
    """``names`` (each once) as one comma-separated set, in the order each
    name's family first appears."""
    return ",".join(families(names))


def families(names: Iterable[str]) -> List[str]:
    """``fold``'s parts: one per family of names (``node-[1-3]``, ``x``)."""
    found: Dict[Tuple[str, str], List[str]] = {}
    for name in names:
        match = None if " (" in name else _LAST_NUMBER.match(name)
        if match is None:
            found.setdefault((name, "\0whole"), [])
            continue
        found.setdefault((match.group(1), match.group(3)), []).append(match.group(2))
    return [_family(prefix, suffix, numbers) for (prefix, suffix), numbers in found.items()]


def _family(prefix: str, suffix: str, numbers: List[str]) -> str:
    if suffix == "\0whole":
        return prefix
    if len(numbers) == 1:
        return f"{prefix}{numbers[0]}{suffix}"
    return f"{prefix}[{','.join(_ranges(numbers))}]{suffix}"


def _ranges(numbers: List[str]) -> List[str]:
    """``['1', '2', '3', '5']`` as ``['1-3', '5']``; a range keeps its first
    number's width (``09-10``), so ``1`` and ``01`` never share one."""
    left = set(numbers)
    found = []
    for first in sorted(left, key=lambda t: (int(t), len(t))):
        if first not in left:
            continue  # in an earlier range
        width = len(first) if len(first) > 1 and first.startswith("0") else 0
        last = first
        left.discard(first)
        while str(int(last) + 1).zfill(width) in left:
            last = str(int(last) + 1).zfill(width)
            left.discard(last)
        found.append(first if last == first else f"{first}-{last}")
    return found
