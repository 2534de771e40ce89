"""``--limit`` and ``--exclude``: which of hosts.yaml's sub-nodes a run uses.

A pattern matches host names (as rendered): a shell glob (``web-*``), a node
range (``node-[1-10,15]``, zero-padded ``node[01-10]``), several of them
separated by commas, or ``@FILE``: a file of such patterns (host names, as
Pegasus writes in failed-hosts.txt), one a line, ``#`` starting a comment.
Selection happens before anything connects: unselected hosts are never
contacted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Pattern as Regex, Sequence, Set, Tuple

from pegasus import nodeset
from pegasus.errors import UsageError

_RANGES = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")  # what a node range's brackets hold
SHOWN = 12  # host groups a message names before counting the rest


@dataclass(frozen=True)
class Pattern:
    """One ``--limit`` or ``--exclude`` as typed, and what it matches."""

    option: str  # "--limit" or "--exclude"
    text: str  # as typed (``@failed-hosts.txt``, ``node-[1-4]``)
    parts: Tuple[Tuple[Regex, Tuple[Tuple[Tuple[int, int, int], ...], ...]], ...]

    def matches(self, name: str) -> bool:
        return any(_matches(regex, ranges, name) for regex, ranges in self.parts)


@dataclass(frozen=True)
class Selection:
    limit: Tuple[Pattern, ...] = ()
    exclude: Tuple[Pattern, ...] = ()


def parse(option: str, text: str) -> Pattern:
    """A pattern as typed after ``option``; UsageError for a bad one or a bad file."""
    words = _file_words(option, text[1:]) if text.startswith("@") else _split(text)
    if not words:
        raise UsageError(f"{option} '{text}': no host pattern given")
    return Pattern(option, text, tuple(_compile(option, text, word) for word in words))


def select(nodes: Sequence, selection: Selection, hosts_file: str) -> list:
    """The sub-nodes (``model.SubNode``) whose hosts the selection keeps, in
    hosts.yaml order."""
    if not (selection.limit or selection.exclude):
        return list(nodes)
    names = list(dict.fromkeys(node.hostname for node in nodes))
    kept: Set[str] = set() if selection.limit else set(names)
    for pattern in selection.limit:
        kept |= _matching(pattern, names, hosts_file)
    for pattern in selection.exclude:
        kept -= _matching(pattern, names, hosts_file)
    if not kept:
        raise UsageError(f"{_options(selection)} {_leave(selection)} no host of {hosts_file} "
                         f"(its hosts: {fold(names)})")
    return [node for node in nodes if node.hostname in kept]


def fold(names: Sequence[str], shown: int = SHOWN) -> str:
    """Host names in few words: numbered names folded into ranges (``node-[1-4,7]``),
    at most ``shown`` families."""
    words = nodeset.families(dict.fromkeys(names))
    more = len(words) - shown
    return ", ".join(words[:shown]) + (f" and {more} more" if more > 0 else "")


def _options(selection: Selection) -> str:
    return " ".join(f"{p.option} '{p.text}'" for p in selection.limit + selection.exclude)


def _matching(pattern: Pattern, names: Sequence[str], hosts_file: str) -> Set[str]:
    found = {name for name in names if pattern.matches(name)}
    if not found:
        raise UsageError(f"{pattern.option} '{pattern.text}' matches no host of "
                         f"{hosts_file} (its hosts: {fold(names)})")
    return found


def _file_words(option: str, path: str) -> List[str]:
    """The patterns of an ``@FILE``: one a line, blank lines and comments skipped."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        raise UsageError(f"{option} @{path}: no such file (Pegasus writes failed-hosts.txt "
                         "and unreachable-hosts.txt beside the queue after a run in which "
                         "some host failed or could not be reached)") from None
    except OSError as err:
        raise UsageError(f"{option} @{path}: cannot read it ({err.strerror})") from None
    words = [word for line in text.splitlines()
             for word in _split(line.split("#", 1)[0].strip())]
    if not words:
        raise UsageError(f"{option} @{path}: the file lists no hosts")
    return words


def _split(text: str) -> List[str]:
    """Comma-separated patterns; commas inside brackets belong to a range."""
    words, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth <= 0:
            words.append(text[start:i].strip())
            start, depth = i + 1, 0
    return [word for word in words + [text[start:].strip()] if word]


def _compile(option: str, text: str, word: str):
    """A pattern word as a regex (node ranges as digit groups) and its ranges."""
    regex, ranges, i = [], [], 0
    while i < len(word):
        char = word[i]
        end = word.find("]", i + 1) if char == "[" else -1
        if char == "[" and end < 0:
            raise UsageError(f"{option} '{text}': '[' without its ']'")
        if char == "[" and _RANGES.match(word[i + 1:end]):
            ranges.append(_ranges(option, text, word[i + 1:end]))
            regex.append(r"(\d+)")
        elif char == "[":
            inner = word[i + 1:end]
            regex.append("[" + ("^" + inner[1:] if inner.startswith("!") else inner) + "]")
        else:
            regex.append({"*": ".*", "?": "."}.get(char, re.escape(char)))
        i = end + 1 if char == "[" else i + 1
    try:
        return re.compile("".join(regex) + r"\Z"), tuple(ranges)
    except re.error:
        raise UsageError(f"{option} '{text}': not a host pattern (use globs as in "
                         "'node-*', or ranges as in 'node-[1-10,15]')") from None


def _ranges(option: str, text: str, inner: str) -> Tuple[Tuple[int, int, int], ...]:
    """``1-10,15`` as (low, high, width); width > 0: zero-padded (``01-10``)."""
    found = []
    for part in inner.split(","):
        low, _, high = part.partition("-")
        high = high or low
        if int(high) < int(low):
            raise UsageError(f"{option} '{text}': the range {part} runs backwards")
        width = len(low) if low.startswith("0") and len(low) > 1 else 0
        found.append((int(low), int(high), width))
    return tuple(found)


def _matches(regex: Regex, ranges, name: str) -> bool:
    match = regex.match(name)
    if match is None:
        return False
    return all(_in(digits, allowed) for digits, allowed in zip(match.groups(), ranges))


def _in(digits: str, allowed) -> bool:
    number = int(digits)
    for low, high, width in allowed:
        if low <= number <= high and (len(digits) == width if width
                                      else digits == str(number)):
            return True
    return False


def _leave(selection: Selection) -> str:
    """The verb after the patterns: one leaves, several leave."""
    return "leaves" if len(selection.limit) + len(selection.exclude) == 1 else "leave"
