"""The pure scheduler: which free sub-nodes get the next jobs."""

import random

import pytest

from dataclasses import replace

from pegasus.expand import expand_hosts
from pegasus.model import Job, SubNode
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


# ---------------------------------------------------------------- GPUs in foreign use

def slot_hosts(*sizes):
    """Lanes of hosts h0, h1, ... with ``slots`` of these sizes (as expand makes them)."""
    nodes = []
    for h, size in enumerate(sizes):
        first = len(nodes)
        nodes += [SubNode(first + lane, f"h{h}", (), lane, size) for lane in range(size)]
    return nodes


def one(count="1"):
    from pegasus.model import Job
    return Job("x", (("slots", count),))


@pytest.mark.parametrize("skipped, count, where", [
    ({0: frozenset({0})}, "1", ("h0", (1,))),  # GPU 0 in foreign use
    ({0: frozenset({0, 1})}, "1", ("h1", (0,))),  # all of h0's: the next host
    ({0: frozenset({1})}, "2", ("h1", (0, 1))),  # no two free on h0
    ({0: frozenset(), 2: frozenset({0})}, "2", ("h0", (0, 1))),
    ({0: None}, "1", None),  # not known yet: the job waits for h0's answer
    ({0: None}, "4", ("h1", (0, 1, 2, 3))),  # ...unless it could not go there anyway
    ({}, "1", ("h0", (0,))),  # hosts without a probe: as before
])
def test_a_plan_skips_gpus_in_foreign_use(skipped, count, where):
    from pegasus.scheduler import GpuUse
    plan = Scheduler(slot_hosts(2, 4)).plan(GpuUse(skipped))
    node = plan.place(one(count))
    assert (node and (node.hostname, node.slots)) == where
    assert plan.waits_for == ({0} if where is None else set())


def test_a_lane_that_probes_takes_no_job_and_a_job_waits_for_it_if_it_was_the_last():
    from pegasus.scheduler import GpuUse
    nodes = slot_hosts(2)
    s = Scheduler(nodes)
    plan = s.plan(GpuUse({0: frozenset()}, frozenset({nodes[0]})))
    assert plan.place(one()) == SubNode(1, "h0", (), 1, 2)  # the other lane
    assert plan.place(one()) is None  # the lane probing will be free soon: wait
    assert plan.waits_for == {0}


# ---------------------------------------------------------------- retries (issue 13)

def test_a_retry_avoids_the_host_where_it_failed_when_another_is_free():
    nodes = expand_hosts(["h1", "h2", "h3"])
    plan = Scheduler(nodes).plan()
    assert plan.place(Job("x"), avoid={nodes[0]}).hostname == "h2"
    assert plan.place(Job("y")).hostname == "h1"  # the others keep their order
    assert plan.place(Job("z")).hostname == "h3"


def test_a_retry_takes_the_sub_node_where_it_failed_when_no_other_is_free():
    nodes = expand_hosts(["h1", "h2"])
    scheduler = Scheduler(nodes)
    scheduler.start([replace(nodes[1], slots=(0,))])
    assert scheduler.plan().place(Job("x"), avoid={nodes[0]}).hostname == "h1"


def test_a_retry_with_slots_prefers_another_host_then_another_lane():
    nodes = expand_hosts([{"hostname": ["h1", "h2"], "slots": "2"}])
    plan = Scheduler(nodes).plan()
    assert plan.place(Job("x"), avoid={nodes[0], nodes[2]}).hostname == "h1"  # none better
    plan = Scheduler(nodes).plan()
    assert plan.place(Job("x"), avoid={nodes[0]}).hostname == "h2"


def test_sub_nodes_added_are_down_until_brought_up_and_removed_ones_leave():
    nodes = grid(["a", "b"], 1)
    s = Scheduler(nodes)
    s.start([nodes[1]])
    s.remove(nodes)  # hosts.yaml changed: a idle, b busy
    c = SubNode(5, "c")
    s.add([c])
    assert s.free() == [] and s.is_down(c) and not s.has_free()
    s.bring_up(c)
    assert s.free() == [c]
    s.finish(nodes[1])  # b's job ended: it takes nothing more
    assert s.free() == [c] and s.running == 0 and s.nodes == [c]
    assert not s.has_down("a") and not s.has_down("b")


def test_a_host_with_slots_added_makes_the_scheduler_pack():
    s = Scheduler(grid(["a"], 1))
    lanes = [SubNode(10 + lane, "g", lane=lane, slot_count=2) for lane in range(2)]
    s.add(lanes)
    for lane in lanes:
        s.bring_up(lane)
    job = Job("x", (("slots", "2"),))
    node = s.plan().place(job)
    assert node.hostname == "g" and node.slots == (0, 1)
