"""The pure scheduler: which free sub-nodes get the next jobs."""

import random

import pytest

from pegasus.model import SubNode
from pegasus.scheduler import Scheduler


def grid(hosts, slots):
    return [SubNode(i * slots + s, h, (("gpu", str(s)),))
            for i, h in enumerate(hosts) for s in range(slots)]


def test_all_free_spreads_over_hosts_first():
    nodes = grid(["a", "b"], 2)
    order = Scheduler(nodes).free()
    assert [(n.hostname, n.params) for n in order] == [
        ("a", (("gpu", "0"),)), ("b", (("gpu", "0"),)),
        ("a", (("gpu", "1"),)), ("b", (("gpu", "1"),))]


def test_busy_nodes_are_not_free_and_least_loaded_host_comes_first():
    nodes = grid(["a", "b"], 2)
    s = Scheduler(nodes)
    s.start([nodes[0], nodes[1]])  # both of host a
    assert s.free() == [nodes[2], nodes[3]]
    s.finish(nodes[0])
    assert s.free()[0] == nodes[2]  # b has no job: it goes first
    assert set(s.free()) == {nodes[0], nodes[2], nodes[3]}
    assert s.running == 1


def test_starting_a_busy_node_twice_is_a_bug():
    nodes = grid(["a"], 1)
    s = Scheduler(nodes)
    s.start(nodes)
    with pytest.raises(ValueError):
        s.start(nodes)


def test_down_nodes_get_nothing():
    nodes = grid(["a", "b"], 1)
    s = Scheduler(nodes)
    s.take_down(nodes[0])
    assert s.free() == [nodes[1]]
    s.take_down(nodes[1])
    assert s.free() == []


def test_every_free_node_is_listed_once():
    nodes = grid(["a", "b", "c"], 3)
    s = Scheduler(nodes)
    s.start(nodes[::2])
    free = s.free()
    assert sorted(n.index for n in free) == [n.index for n in nodes[1::2]]


def test_taking_many_down_at_once_is_taking_each_down():
    nodes = grid(["a", "b", "c"], 4)
    rng = random.Random(7)
    for _ in range(200):
        one, many = Scheduler(nodes), Scheduler(nodes)
        busy = rng.sample(nodes, rng.randint(0, 5))
        one.start(busy)
        many.start(busy)
        for node in rng.sample(nodes, rng.randint(0, 3)):
            one.take_down(node)
            many.take_down(node)
        leaving = [rng.choice(nodes) for _ in range(rng.randint(0, 12))]  # repeats too
        for node in leaving:
            one.take_down(node)
        many.take_down_all(leaving)
        assert (many.free(), many.down, many.idle_count) == (one.free(), one.down,
                                                             one.idle_count)
        for node in busy:
            one.finish(node)
            many.finish(node)
        assert many.free() == one.free()


def test_has_down_says_whether_a_host_has_a_sub_node_down():
    nodes = grid(["a", "b"], 2)
    s = Scheduler(nodes)
    s.take_down_all(nodes[:2])
    assert s.has_down("a") and not s.has_down("b")
    s.bring_up(nodes[0])
    assert s.has_down("a")
    s.bring_up(nodes[1])
    s.bring_up(nodes[1])  # already up
    s.take_down(nodes[2])
    assert not s.has_down("a") and s.has_down("b")
