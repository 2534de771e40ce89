"""Which slots of which host a multi-slot job gets. Pure: no I/O, no gevent.

Slots of a host are numbered 0..n-1 (slot i is GPU i). The allocation rules
are the original Pegasus's (its `jw-job-slots` branch), for compatibility:

- first_fit: a contiguous block starting at an even index; else any
  contiguous block; else the lowest-numbered free slots. Lowest start first.
- buddy: a power-of-two count in a block aligned to it; no fallback.

Across hosts the first host in hosts.yaml order that can allocate wins
(packing, so a large job can still find an empty host).
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import Enum
from typing import (FrozenSet, Iterable, List, Optional, Sequence, Tuple,
                    Union)

from pegasus.model import SPELLINGS as POLICY_NAMES

Slots = Tuple[int, ...]
Free = Union[Sequence[bool], AbstractSet]  # a flag per slot, or the free indices


class Policy(str, Enum):
    FIRST_FIT = "first_fit"
    BUDDY = "buddy"


SPELLINGS = {typed: Policy(name) for typed, name in POLICY_NAMES.items()}


@dataclass(frozen=True)
class Placement:
    index: int  # position of the host in the list given to place()
    host: str
    slots: Slots


def policy_of(value: object) -> Policy:
    """The policy a value names (None: the default), or a ValueError."""
    if value is None:
        return Policy.FIRST_FIT
    policy = SPELLINGS.get(value) if isinstance(value, str) else None
    if policy is None:
        raise ValueError(f"allocation_policy: {_shown(value)} is not a policy: "
                         "use first_fit (the default) or buddy")
    return policy


def count_of(value: object) -> int:
    """A slot count as typed (an int or a string of digits), or a ValueError."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    raise ValueError(f"slots: {_shown(value)} is not a whole number")


def allocate(free: Free, count: int, policy: object) -> Optional[Slots]:
    """The slots a job of `count` slots gets, or None if it must wait."""
    chosen = policy_of(policy)
    cells = _free_set(free)
    if count < 1 or count > len(cells):
        return None  # the original allocates nothing for 0 or more than free
    if chosen is Policy.BUDDY:
        return _buddy(cells, count)
    return _first_fit(cells, count)


def validate(count: object, policy: object,
             largest_host: Union[int, Tuple[str, int]]) -> None:
    """A ValueError in the user's words if no host could ever run the request.

    largest_host is the largest host's slot count, or its (name, slots).
    """
    chosen = policy_of(policy)
    slots, host = _largest(largest_host)
    has = f"{host} has {slots} slot{'s' if slots != 1 else ''}"
    advice = f"give a number from 1 to {slots} ({has})" if slots > 1 else f"give 1 ({has})"
    try:
        number = count_of(count)
    except ValueError as error:
        raise ValueError(f"{error}: {advice}") from None
    shown = f"slots: {_shown(count)}"
    if number < 0:
        raise ValueError(f"{shown} is negative: {advice}")
    if number == 0:
        raise ValueError(f"{shown} asks for no slot: {advice}")
    if number > slots:
        raise ValueError(f"{shown} is more than any host has: {has}")
    if chosen is Policy.BUDDY and not _power_of_two(number):
        raise ValueError(f"{shown} with allocation_policy: buddy is not a power "
                         f"of two: give {_powers_up_to(slots)} ({has})")


def place(hosts: Sequence[Tuple[str, int, FrozenSet[int]]], count: int,
          policy: object) -> Optional[Placement]:
    """The first host (name, slot count, busy slots) that can allocate, or None."""
    for index, (name, total, busy) in enumerate(hosts):
        slots = allocate(_flags(total, busy), count, policy)
        if slots is not None:
            return Placement(index, name, slots)
    return None


def render(slots: Iterable[int]) -> str:
    """`{{slots}}`: the indices joined by commas, `0,1,2,3`."""
    return ",".join(str(slot) for slot in slots)


def _first_fit(free: FrozenSet[int], count: int) -> Slots:
    runs = _runs(free)
    for step in (2, 1):
        start = _first_start(runs, count, step)
        if start is not None:
            return tuple(range(start, start + count))
    return tuple(sorted(free)[:count])  # always fits: count <= len(free)


def _buddy(free: FrozenSet[int], count: int) -> Optional[Slots]:
    if not _power_of_two(count):
        return None
    start = _first_start(_runs(free), count, count)
    return None if start is None else tuple(range(start, start + count))


def _first_start(runs: List[int], count: int, step: int) -> Optional[int]:
    return next((s for s in range(0, len(runs), step) if runs[s] >= count), None)


def _runs(free: FrozenSet[int]) -> List[int]:
    """runs[i]: how many free slots in a row start at slot i."""
    runs = [0] * (max(free, default=-1) + 2)
    for slot in range(len(runs) - 2, -1, -1):
        runs[slot] = runs[slot + 1] + 1 if slot in free else 0
    return runs


def _free_set(free: Free) -> FrozenSet[int]:
    if isinstance(free, AbstractSet):
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in free):
            raise ValueError(f"free slots must be indices >= 0, not {sorted(free, key=repr)}")
        return frozenset(free)
    if not all(isinstance(flag, bool) for flag in free):
        raise TypeError("free must be a set of free indices or a flag (bool) per slot")
    return frozenset(i for i, flag in enumerate(free) if flag)


def _flags(total: int, busy: FrozenSet[int]) -> List[bool]:
    if any(not 0 <= slot < total for slot in busy):
        raise ValueError(f"busy slots {sorted(busy)} are not all in 0..{total - 1}")
    return [slot not in busy for slot in range(total)]


def _largest(largest_host: Union[int, Tuple[str, int]]) -> Tuple[int, str]:
    if isinstance(largest_host, int):
        return largest_host, "the largest host"
    name, slots = largest_host
    return slots, f"the largest host, {name},"


def _power_of_two(number: int) -> bool:
    return number > 0 and number & (number - 1) == 0


def _powers_up_to(slots: int) -> str:
    powers = [str(1 << k) for k in range(slots.bit_length()) if 1 << k <= slots]
    return powers[0] if len(powers) == 1 else ", ".join(powers[:-1]) + " or " + powers[-1]


def _shown(value: object) -> str:
    """A value as the user typed it; quoted when it would not read as typed."""
    if isinstance(value, str) and value and value == value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return repr(value)
