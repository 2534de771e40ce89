"""The pure slot allocator (issue 11): the original branch's cases, ours, properties."""

import ast
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pegasus.slots
from pegasus.slots import Placement, Policy, allocate, count_of, place, policy_of, render, validate

from helpers import examples

POLICIES = ["first_fit", "buddy"]


def slots(text):
    """'0-3,6' -> (0, 1, 2, 3, 6); 'none' -> None; '' -> ()."""
    if text == "none":
        return None
    found = []
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        found.extend(range(int(low), int(high or low) + 1))
    return tuple(found)


def run_requests(total, occupied, requests, policy):
    """Allocate each request in turn on one host; each result stays occupied."""
    busy = set(slots(occupied))
    results = []
    for count in requests:
        got = allocate([slot not in busy for slot in range(total)], count, policy)
        busy.update(got or ())
        results.append(got)
    return results


# slots.md, "The branch's own allocator cases, as data", row by row.
BRANCH_CASES = [
    (8, "", [1], "first_fit", ["0"]),
    (8, "", [8], "first_fit", ["0-7"]),
    (8, "0-3", [5], "first_fit", ["none"]),
    (8, "", [2, 2, 2, 2], "first_fit", ["0,1", "2,3", "4,5", "6,7"]),
    (8, "", [4, 4], "first_fit", ["0-3", "4-7"]),
    (8, "0,1,4,5", [2], "first_fit", ["2,3"]),
    (4, "0,2", [2], "first_fit", ["1,3"]),
    (4, "0", [2], "first_fit", ["2,3"]),
    (8, "1,3,5,7", [3], "first_fit", ["0,2,4"]),
    (8, "0,1", [4], "first_fit", ["2-5"]),
    (8, "", [0], "first_fit", ["none"]),
    (1, "", [1, 1], "first_fit", ["0", "none"]),
    (8, "", [1, 1], "buddy", ["0", "1"]),
    (8, "", [2, 2, 2, 2], "buddy", ["0,1", "2,3", "4,5", "6,7"]),
    (8, "", [4, 4], "buddy", ["0-3", "4-7"]),
    (8, "", [8], "buddy", ["0-7"]),
    (8, "", [3], "buddy", ["none"]),
    (8, "", [5], "buddy", ["none"]),
    (8, "", [6], "buddy", ["none"]),
    (8, "", [7], "buddy", ["none"]),
    (8, "0-4,7", [2], "buddy", ["none"]),
    (8, "0,1", [4], "buddy", ["4-7"]),
]

# Ours: the rules of slots.md where the branch has no case.
OUR_CASES = [
    # a 1-slot job is a block too: even starts first (the original's rule, kept)
    (8, "", [1, 1, 1, 1, 1], "first_fit", ["0", "2", "4", "6", "1"]),
    (8, "0", [1], "first_fit", ["2"]),
    # an odd count still prefers an even start over the lowest start
    (8, "", [3, 3], "first_fit", ["0-2", "4-6"]),
    (8, "0-2,4-6", [2], "first_fit", ["3,7"]),
    (8, "0,1,3", [2], "first_fit", ["4,5"]),
    (8, "0,1,3,4,7", [2], "first_fit", ["5,6"]),  # no even block: lowest contiguous
    (8, "0,3,6", [2], "first_fit", ["4,5"]),  # even start 4 beats the lower 1,2
    (8, "0,3,5,6", [2], "first_fit", ["1,2"]),
    (8, "0,3", [4], "first_fit", ["4-7"]),
    (8, "0,2,5", [3], "first_fit", ["1,3,4"]),  # no block of 3 at all
    (8, "", [9], "first_fit", ["none"]),
    (8, "", [-1], "first_fit", ["none"]),
    (8, "0-6", [1, 1], "first_fit", ["7", "none"]),
    (8, "1-7", [1], "buddy", ["0"]),
    (8, "0,2,4,6", [1], "buddy", ["1"]),
    (8, "0-3", [4, 4], "buddy", ["4-7", "none"]),
    (8, "2", [4], "buddy", ["4-7"]),
    (8, "6", [4, 2, 2], "buddy", ["0-3", "4,5", "none"]),
    (6, "", [4, 4], "buddy", ["0-3", "none"]),  # 4-7 runs past a 6-slot host
    (6, "", [4, 2], "buddy", ["0-3", "4,5"]),
    (3, "", [2, 2, 1], "buddy", ["0,1", "none", "2"]),
    (16, "0", [8], "buddy", ["8-15"]),
    (16, "8", [8], "buddy", ["0-7"]),
    (8, "", [0], "buddy", ["none"]),
    (8, "", [16], "buddy", ["none"]),
]


@pytest.mark.parametrize("total, occupied, requests, policy, expected",
                         BRANCH_CASES + OUR_CASES)
def test_allocator_case(total, occupied, requests, policy, expected):
    assert run_requests(total, occupied, requests, policy) == [slots(e) for e in expected]


def test_the_branch_history_releases_then_prefers_the_lowest_even_block():
    busy = set()

    def take(count):
        got = allocate([s not in busy for s in range(8)], count, "first_fit")
        busy.update(got)
        return got

    first, second, third = take(2), take(2), take(2)
    busy.difference_update(first)
    assert take(2) == (0, 1)
    busy.difference_update(second + third)
    assert take(4) == (2, 3, 4, 5)


# slots.md, "Across hosts": (hosts as (slots, busy), requests, expected (host, slots)).
PLACE_CASES = [
    ([(8, ""), (8, "")], [4], [(0, "0-3")]),
    ([(8, "0-7"), (8, "")], [4], [(1, "0-3")]),
    ([(4, ""), (8, "")], [6], [(1, "0-5")]),
    ([(1, ""), (1, ""), (1, "")], [1, 1, 1, 1], [(0, "0"), (1, "0"), (2, "0"), None]),
    # ours
    ([(4, ""), (8, ""), (2, "")], [6], [(1, "0-5")]),
    ([(4, "0,1"), (4, "0-2")], [3], [None]),
    ([(8, ""), (8, "")], [4, 4, 4, 4, 4], [(0, "0-3"), (0, "4-7"), (1, "0-3"), (1, "4-7"), None]),
    ([(2, ""), (8, "")], [1, 2, 1], [(0, "0"), (1, "0,1"), (0, "1")]),  # packing
    ([], [1], [None]),
]


@pytest.mark.parametrize("hosts, requests, expected", PLACE_CASES)
def test_place_case(hosts, requests, expected):
    state = [(f"n{i}", total, set(slots(busy))) for i, (total, busy) in enumerate(hosts)]
    for count, want in zip(requests, expected):
        got = place([(name, total, frozenset(busy)) for name, total, busy in state],
                    count, "first_fit")
        assert got == (None if want is None else Placement(want[0], f"n{want[0]}", slots(want[1])))
        if got:
            state[got.index][2].update(got.slots)


def test_place_with_buddy_skips_hosts_without_an_aligned_block():
    hosts = [("a", 8, frozenset({1, 5})), ("b", 8, frozenset({0, 7})), ("c", 4, frozenset())]
    assert place(hosts, 4, "buddy") == Placement(2, "c", (0, 1, 2, 3))
    assert place(hosts, 2, "buddy") == Placement(0, "a", (2, 3))


def test_place_tells_hosts_of_the_same_name_apart_by_index():
    hosts = [("n", 1, frozenset({0})), ("n", 1, frozenset())]
    assert place(hosts, 1, "first_fit").index == 1


def test_place_refuses_busy_slots_outside_the_host():
    with pytest.raises(ValueError, match="0..3"):
        place([("a", 4, frozenset({4}))], 1, "first_fit")


def test_free_as_flags_or_as_indices_gives_the_same_answer():
    flags = [False, True, True, False, True, True, True, False]
    indices = {i for i, free in enumerate(flags) if free}
    for count in range(0, 9):
        for policy in POLICIES:
            assert allocate(flags, count, policy) == allocate(indices, count, policy)
            assert allocate(frozenset(indices), count, policy) == allocate(indices, count, policy)


def test_free_indices_need_no_host_size():
    assert allocate({9, 10}, 2, "buddy") is None  # 9-10 is not aligned to 2
    assert allocate({10, 11}, 2, "buddy") == (10, 11)
    assert allocate(set(), 1, "first_fit") is None
    assert allocate([], 1, "buddy") is None


def test_a_list_of_indices_is_not_mistaken_for_flags():
    with pytest.raises(TypeError):
        allocate([0, 1, 2], 1, "first_fit")
    with pytest.raises(ValueError):
        allocate({-1, 0}, 1, "first_fit")


@pytest.mark.parametrize("spelling, policy", [
    ("first_fit", Policy.FIRST_FIT), ("firstfit", Policy.FIRST_FIT),
    ("first-fit", Policy.FIRST_FIT), (None, Policy.FIRST_FIT),
    ("buddy", Policy.BUDDY), (Policy.BUDDY, Policy.BUDDY)])
def test_policy_spellings(spelling, policy):
    assert policy_of(spelling) is policy
    assert allocate({1, 2, 3}, 2, spelling) == allocate({1, 2, 3}, 2, policy)


@pytest.mark.parametrize("spelling", ["best_fit", "Buddy", "FIRST_FIT", "", 1, ["buddy"]])
def test_unknown_policies_are_refused(spelling):
    with pytest.raises(ValueError, match="use first_fit .the default. or buddy"):
        policy_of(spelling)
    with pytest.raises(ValueError):
        allocate({0}, 1, spelling)


def test_the_policy_renders_as_its_name():
    assert Policy.BUDDY.value == "buddy" and Policy.FIRST_FIT.value == "first_fit"
    assert Policy.BUDDY == "buddy"


@pytest.mark.parametrize("value, expected", [(1, 1), (8, 8), ("4", 4), ("08", 8), ("-2", -2)])
def test_count_of_takes_ints_and_digit_strings(value, expected):
    assert count_of(value) == expected


@pytest.mark.parametrize("value", [
    "two", "", " 4", "4.0", "+4", "1e3", "\u0664", 2.0, True, None, [4]])
def test_count_of_refuses_what_is_not_a_whole_number(value):
    with pytest.raises(ValueError, match="is not a whole number"):
        count_of(value)


@pytest.mark.parametrize("count, policy, largest", [
    (1, None, 1), ("1", "first_fit", 1), (8, "first-fit", 8), ("8", "buddy", 8),
    (3, "firstfit", 4), (4, "buddy", 6), (1, "buddy", 1), (6, None, ("gpu-node-1", 8))])
def test_valid_requests_pass(count, policy, largest):
    assert validate(count, policy, largest) is None


@pytest.mark.parametrize("count, policy, largest, message", [
    (9, None, 8, "slots: 9 is more than any host has: the largest host has 8 slots"),
    ("9", "buddy", ("gpu-node-1", 8),
     "slots: 9 is more than any host has: the largest host, gpu-node-1, has 8 slots"),
    (0, None, 8, "slots: 0 asks for no slot: give a number from 1 to 8 "
                 "(the largest host has 8 slots)"),
    ("0", "buddy", 4, "slots: 0 asks for no slot: give a number from 1 to 4 "
                      "(the largest host has 4 slots)"),
    (-1, None, 8, "slots: -1 is negative: give a number from 1 to 8 "
                  "(the largest host has 8 slots)"),
    ("-3", None, ("n1", 2), "slots: -3 is negative: give a number from 1 to 2 "
                            "(the largest host, n1, has 2 slots)"),
    ("two", None, 8, "slots: two is not a whole number: give a number from 1 to 8 "
                     "(the largest host has 8 slots)"),
    ("2.5", None, 8, "slots: 2.5 is not a whole number: give a number from 1 to 8 "
                     "(the largest host has 8 slots)"),
    ("", None, 8, "slots: '' is not a whole number: give a number from 1 to 8 "
                  "(the largest host has 8 slots)"),
    (6, "buddy", ("gpu-node-1", 8), "slots: 6 with allocation_policy: buddy is not a power "
     "of two: give 1, 2, 4 or 8 (the largest host, gpu-node-1, has 8 slots)"),
    ("3", "buddy", 6, "slots: 3 with allocation_policy: buddy is not a power "
                      "of two: give 1, 2 or 4 (the largest host has 6 slots)"),
    (3, "buddy", 3, "slots: 3 with allocation_policy: buddy is not a power "
                    "of two: give 1 or 2 (the largest host has 3 slots)"),
    (4, "best_fit", 8, "allocation_policy: best_fit is not a policy: "
                       "use first_fit (the default) or buddy"),
])
def test_bad_requests_say_what_is_wrong_in_words(count, policy, largest, message):
    with pytest.raises(ValueError) as raised:
        validate(count, policy, largest)
    assert str(raised.value) == message


@pytest.mark.parametrize("largest", range(1, 17))
def test_validate_refuses_exactly_what_an_empty_largest_host_cannot_run(largest):
    for count, policy in itertools.product(range(-1, largest + 3), POLICIES):
        try:
            validate(count, policy, largest)
            valid = True
        except ValueError:
            valid = False
        assert valid == (allocate([True] * largest, count, policy) is not None), (count, policy)


@pytest.mark.parametrize("given_slots, text", [
    ((0, 1, 2, 3), "0,1,2,3"), ((2, 3, 4, 5), "2,3,4,5"), ((7,), "7"), ((), ""),
    ([1, 3], "1,3")])
def test_render(given_slots, text):
    assert render(given_slots) == text


def test_the_module_is_pure():
    with open(pegasus.slots.__file__) as f:
        tree = ast.parse(f.read())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    pegasus_modules = {node.module for node in ast.walk(tree)
                       if isinstance(node, ast.ImportFrom) and node.module
                       and node.module.startswith("pegasus")}
    assert pegasus_modules <= {"pegasus.model"}
    assert imported <= {"__future__", "re", "collections", "dataclasses", "enum",
                        "typing", "pegasus"}, imported


# A brute-force reference: every set of `count` free slots, ranked by the rules.

def is_power_of_two(number):
    return number >= 1 and bin(number).count("1") == 1


def reference(free, count, policy):
    if count < 1:
        return None
    best = None
    for choice in itertools.combinations(sorted(free), count):
        contiguous = choice[-1] - choice[0] == count - 1
        if policy == "buddy":
            if not (contiguous and is_power_of_two(count) and choice[0] % count == 0):
                continue
            rank = (0, choice)
        else:
            rank = (0 if contiguous and choice[0] % 2 == 0 else 1 if contiguous else 2, choice)
        best = min(best or rank, rank)
    return None if best is None else best[1]


def can_fit(total, free, count, policy):
    """Whether the policy can place `count` slots at all, by scanning every start."""
    if count < 1 or count > len(free):
        return False
    if policy == "first_fit":
        return True  # its last resort takes any free slots
    return is_power_of_two(count) and any(
        set(range(start, start + count)) <= free
        for start in range(0, total - count + 1) if start % count == 0)


@pytest.mark.parametrize("total", range(0, 9))
def test_every_free_set_of_small_hosts_matches_the_brute_force(total):
    for mask in range(1 << total):
        free = {slot for slot in range(total) if mask >> slot & 1}
        flags = [slot in free for slot in range(total)]
        for count, policy in itertools.product(range(-1, total + 2), POLICIES):
            assert allocate(flags, count, policy) == reference(free, count, policy), \
                (total, sorted(free), count, policy)


def check_allocation(total, got, count, policy):
    assert len(got) == count == len(set(got))
    assert list(got) == sorted(got) and all(0 <= slot < total for slot in got)
    if policy == "buddy":
        assert is_power_of_two(count) and got[0] % count == 0
        assert got == tuple(range(got[0], got[0] + count))


operations = st.lists(st.tuples(st.booleans(), st.integers(0, 17), st.sampled_from(POLICIES),
                                st.integers(0, 1000)), min_size=1, max_size=40)


@settings(max_examples=examples(150), deadline=None)
@given(total=st.integers(1, 16), ops=operations)
def test_random_allocations_and_releases_on_one_host(total, ops):
    live = []
    for release, count, policy, pick in ops:
        if release and live:
            live.pop(pick % len(live))
            continue
        busy = {slot for job in live for slot in job}
        free = set(range(total)) - busy
        got = allocate([slot in free for slot in range(total)], count, policy)
        assert (got is not None) == can_fit(total, free, count, policy)
        if total <= 10:
            assert got == reference(free, count, policy)
        if got is not None:
            check_allocation(total, got, count, policy)
            assert not busy & set(got)
            live.append(got)
        assert sum(map(len, live)) == len({slot for job in live for slot in job})


@settings(max_examples=examples(100), deadline=None)
@given(totals=st.lists(st.integers(1, 16), min_size=1, max_size=4), ops=operations)
def test_random_placements_and_releases_across_hosts(totals, ops):
    live = []  # (host index, slots)
    for release, count, policy, pick in ops:
        if release and live:
            live.pop(pick % len(live))
            continue
        busy = [frozenset(s for h, job in live if h == i for s in job) for i in range(len(totals))]
        hosts = [(f"n{i}", total, busy[i]) for i, total in enumerate(totals)]
        got = place(hosts, count, policy)
        fits = [can_fit(total, set(range(total)) - busy[i], count, policy)
                for i, total in enumerate(totals)]
        assert (got.index if got else None) == next((i for i, ok in enumerate(fits) if ok), None)
        if got is not None:
            check_allocation(totals[got.index], got.slots, count, policy)
            assert not busy[got.index] & set(got.slots)
            live.append((got.index, got.slots))
