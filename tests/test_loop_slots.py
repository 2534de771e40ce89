"""GPU slots in the loop, on fake hosts: placement, waiting, records, bad requests.

Each job's command renders its name, host and ``{{slots}}``, so what a fake
host ran says which slots each job got; the fakes' logical clock says which
jobs overlapped. ``check_schedule`` is the checker the issue asks for: no
two overlapping jobs on one host share a slot, each job got its count,
``buddy`` blocks are aligned, and jobs started in queue order.
"""
import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fakes import (FakeJob, ctrl_c, release, run_app, run_loop, snapshot, when_printed,
                   when_started)
from helpers import examples, read

JOB = "job {{name}} on {{hostname}} slots {{slots}}"
RAN = re.compile(r"^job (\S+) on (\S+) slots (\S+)$")
TWO_BY_FOUR = [{"hostname": ["g1", "g2"], "slots": "4"}]


def job(name, slots=None, policy=None, command=JOB):
    entry = {"command": command, "name": name}
    if slots is not None:
        entry["slots"] = str(slots)
    if policy is not None:
        entry["allocation_policy"] = policy
    return entry


def placed(out):
    """{name: (host, slots, start, end)} of every job that ran."""
    found = {}
    for ran in out.jobs:
        name, host, slots = RAN.match(ran.command).groups()
        found[name] = (host, tuple(int(s) for s in slots.split(",")), ran.start, ran.end)
    return found


def check_schedule(out, queue):
    """Fails unless the run kept every slot promise (see the module's docstring)."""
    got = placed(out)
    for entry in queue:
        host, slots, _, _ = got[entry["name"]]
        assert len(slots) == int(entry.get("slots", "1")), entry
        assert len(set(slots)) == len(slots), entry
        if entry.get("allocation_policy") == "buddy":
            assert slots == tuple(range(slots[0], slots[0] + len(slots))), entry
            assert slots[0] % len(slots) == 0, entry
    runs = list(got.items())
    for i, (a, (host_a, slots_a, start_a, end_a)) in enumerate(runs):
        for b, (host_b, slots_b, start_b, end_b) in runs[i + 1:]:
            overlap = start_a < end_b and start_b < end_a
            if host_a == host_b and overlap:
                assert not set(slots_a) & set(slots_b), (a, b, got)
    names = [entry["name"] for entry in queue]
    assert sorted(got, key=lambda name: got[name][2]) == names  # started in queue order


# ---------------------------------------------------------------- placement

def test_jobs_of_1_2_and_4_slots_on_two_4_slot_hosts_never_share_a_slot(tmp_path):
    queue = [job("a", 1), job("b", 2), job("c", 4), job("d", 1), job("e", 2, "buddy"),
             job("f", 4, "buddy"), job("g", 1), job("h", 2), job("i", 1)]
    scripts = {f"job {e['name']} on {h} slots {s}": FakeJob(duration=0.01 * (n % 3 + 1))
               for n, e in enumerate(queue) for h in ("g1", "g2")
               for s in ("0", "1", "2", "3", "0,1", "1,2", "2,3", "0,1,2,3")}
    out = run_loop(tmp_path, nodes=TWO_BY_FOUR, queue=queue, scripts=scripts)

    assert out.status == 0
    check_schedule(out, queue)
    assert out.queue == []
    assert out.messages[-1] == "9 jobs, all succeeded"


def test_hosts_fill_in_hosts_yaml_order_and_a_job_goes_where_it_fits(tmp_path):
    hosts = [{"hostname": "small", "slots": "4"}, {"hostname": "big", "slots": "8"}]
    queue = [job("a", 2), job("b", 6), job("c", 2), job("d", 1)]
    out = run_loop(tmp_path, nodes=hosts, queue=queue,
                   scripts={"job a on small slots 0,1": FakeJob(hang=True)},
                   actions=[when_started("job d on big slots 6", release(
                       "job a on small slots 0,1"))])

    got = placed(out)
    assert got["a"][:2] == ("small", (0, 1))
    assert got["b"][:2] == ("big", (0, 1, 2, 3, 4, 5))
    assert got["c"][:2] == ("small", (2, 3))
    assert got["d"][:2] == ("big", (6,))
    assert out.status == 0


def test_first_fit_prefers_an_even_start_and_buddy_aligns(tmp_path):
    hosts = [{"hostname": "g", "slots": "8"}]
    queue = [job("one", 1), job("two", 2), job("buddy2", 2, "buddy"),
             job("buddy4", 4, "buddy")]
    out = run_loop(tmp_path, nodes=hosts, queue=queue,
                   scripts={f"job {n} on g slots {s}": FakeJob(hang=True)
                            for n, s in (("one", "0"), ("two", "2,3"), ("buddy2", "4,5"))},
                   actions=[when_started("job buddy2 on g slots 4,5",
                                         release("job one on g slots 0"),
                                         release("job two on g slots 2,3")),
                            when_started("job buddy4 on g slots 0,1,2,3",
                                         release("job buddy2 on g slots 4,5"))])

    got = placed(out)
    assert got["one"][1] == (0,)
    assert got["two"][1] == (2, 3)  # an even start, not 1,2
    assert got["buddy2"][1] == (4, 5)
    assert got["buddy4"][1] == (0, 1, 2, 3)  # 6,7 are free but 4-aligned 4-7 is not
    assert got["buddy4"][2] > got["two"][3]  # it waited for 0-3


def test_a_head_job_that_does_not_fit_waits_and_nothing_jumps_ahead(tmp_path):
    hosts = [{"hostname": "g", "slots": "4"}]
    queue = [job("a", 2), job("big", 4), job("small", 1)]
    out = run_loop(tmp_path, nodes=hosts, queue=queue,
                   scripts={"job a on g slots 0,1": FakeJob(hang=True)},
                   actions=[when_started("job a on g slots 0,1", snapshot("waiting"),
                                         release("job a on g slots 0,1"))])

    assert out.snapshots["waiting"] == [job("big", 4), job("small", 1)]
    got = placed(out)
    assert got["big"][2] > got["a"][3]  # started after a ended
    assert got["small"][2] > got["big"][2]  # never before the big one, though 2 slots were free
    assert out.status == 0


def test_slots_and_policy_render_into_the_command(tmp_path):
    command = "CUDA_VISIBLE_DEVICES={{slots}} train --policy {{allocation_policy}}"
    out = run_loop(tmp_path, nodes=[{"hostname": "g", "slots": "4"}],
                   queue=[{"command": command, "slots": "2", "allocation_policy": "firstfit"},
                          {"command": command, "slots": "2", "allocation_policy": "buddy"},
                          {"command": command}])

    assert [j.command for j in out.jobs] == [
        "CUDA_VISIBLE_DEVICES=0,1 train --policy first_fit",
        "CUDA_VISIBLE_DEVICES=2,3 train --policy buddy",
        "CUDA_VISIBLE_DEVICES=0 train --policy first_fit"]


def test_a_slot_list_joins_the_cartesian_product(tmp_path):
    sweep = {"command": "train {{model}} on {{slots}}", "slots": ["1", "2", "4"],
             "model": "llama"}
    out = run_loop(tmp_path, nodes=[{"hostname": "g", "slots": "4"}], queue=[sweep],
                   scripts={"train llama on 0": FakeJob(hang=True)},
                   actions=[when_started("train llama on 0", snapshot("first runs"),
                                         release("train llama on 0"))])

    assert out.snapshots["first runs"] == [  # 1 and 2 fit at once; 4 waits at the head
        {"command": "train {{model}} on {{slots}}", "model": "llama", "slots": "4"}]
    assert [j.command for j in out.jobs] == ["train llama on 0", "train llama on 2,3",
                                             "train llama on 0,1,2,3"]


def test_hosts_without_slots_run_one_job_each_as_before(tmp_path):
    out = run_loop(tmp_path, nodes=["n1", "n2"], queue=["a {{slots}}", "b {{slots}}"])

    assert out.ran("[n1]") == ["a 0"]
    assert out.ran("[n2]") == ["b 0"]


# ---------------------------------------------------------------- records and output

def test_consumed_and_the_frames_show_each_jobs_slots(tmp_path):
    queue = [job("a", 2), job("b", 1, "buddy")]
    out = run_loop(tmp_path, nodes=[{"hostname": "g", "slots": "4"}], queue=queue)

    assert out.taken_for == ["[g slots 0,1]", "[g slots 2]"]
    assert out.consumed == queue  # the request, so the entry re-runs the same
    assert "[g slots 0,1] === run #1 'job a on g slots 0,1' ===" in out.output
    assert "[g slots 2] === done (exit 0) ===" in out.output


def test_a_lost_slot_job_is_recorded_with_its_request(tmp_path):
    queue = [job("a", 2)]
    out = run_loop(tmp_path, nodes=[{"hostname": "g", "slots": "4"}], queue=queue,
                   scripts={"job a on g slots 0,1": FakeJob(lost_after=0.01)})

    assert out.interrupted == queue
    assert [node for node, _ in out.interrupted_for] == ["[g slots 0,1]"]


# ---------------------------------------------------------------- stopping

def test_ctrl_c_while_the_head_waits_leaves_the_queue_byte_for_byte(tmp_path):
    hosts = [{"hostname": "g", "slots": "4"}]
    text = ("# the sweep\n- command: " + JOB + "\n  name: a\n  slots: 3\n"
            "- {command: '" + JOB + "', name: big, slots: 4}   # waits\n- last one\n")
    head = "# the sweep\n" + text[text.index("- {command"):]
    out = run_loop(tmp_path, nodes=hosts, queue=text,
                   scripts={"job a on g slots 0,1,2": FakeJob(hang=True)},
                   actions=[when_started("job a on g slots 0,1,2", ctrl_c,
                                         release("job a on g slots 0,1,2"))])

    assert out.status == 130
    assert read(tmp_path / "queue.yaml") == head
    assert [j.command for j in out.jobs] == ["job a on g slots 0,1,2"]


def test_a_head_that_no_host_up_can_fit_stops_the_run_and_stays(tmp_path):
    from fakes import Answer
    hosts = [{"hostname": "big", "slots": "4"}, {"hostname": "small", "slots": "2"}]
    out = run_loop(tmp_path, nodes=hosts, queue=[job("a", 1), job("huge", 4)],
                   hosts={"big": [Answer.LOGIN_REFUSED]})

    assert [j.command for j in out.jobs] == ["job a on small slots 0"]
    assert out.queue == [job("huge", 4)]
    assert any("needs more slots than any host that is up has free" in m
               for m in out.messages)
    assert out.status != 0


# ---------------------------------------------------------------- bad requests

@pytest.mark.parametrize("request_, says", [
    ({"slots": "5"}, "slots: 5 is more than any host has: the largest host, g, has 4 slots"),
    ({"slots": "0"}, "slots: 0 asks for no slot"),
    ({"slots": "-1"}, "slots: -1 is negative"),
    ({"slots": "two"}, "slots: two is not a whole number"),
    ({"slots": "3", "allocation_policy": "buddy"}, "is not a power of two: give 1, 2 or 4"),
    ({"allocation_policy": "best"}, "allocation_policy: best is not a policy"),
])
def test_a_bad_slot_request_is_bad_input_and_the_queue_is_untouched(tmp_path, request_, says):
    queue = [job("ok", 1), dict(job("bad"), **request_)]
    out = run_app(tmp_path, nodes=[{"hostname": "g", "slots": "4"}], queue=queue)

    assert out.status == 2
    assert out.jobs == []  # found at the start-up check, before anything is taken
    assert out.queue == queue
    assert says in out.output
    assert "queue.yaml" in out.output and "entry 2" in out.output


def test_a_daemon_says_a_bad_request_once_and_waits_for_the_fix(tmp_path):
    from fakes import deferred, rewrite, when_bad_entry
    bad = dict(job("bad"), slots="9")
    out = run_loop(tmp_path, nodes=[{"hostname": "g", "slots": "4"}], daemon=True,
                   queue=[job("a", 1), bad],
                   actions=[when_bad_entry(deferred(rewrite([job("fixed", 4)]))),
                            when_started("job fixed on g slots 0,1,2,3", ctrl_c)])

    assert [j.command for j in out.jobs] == ["job a on g slots 0", "job fixed on g slots 0,1,2,3"]
    assert sum("slots: 9 is more than any host has" in m for m in out.messages) == 1


@pytest.mark.parametrize("hosts, says", [
    ([{"hostname": "g", "slots": "0"}], "'slots: 0' is not a number of slots"),
    ([{"hostname": "g", "slots": "many"}], "'slots: many' is not a number of slots"),
    ([{"hostname": "g", "slots": ["2", "4"]}], "'slots' is a list ([2, 4])"),
    ([{"hostname": "g", "gpu_group": ["a", "b"], "slots": "4"}],
     "gives host g slots on several sub-nodes"),
    ([{"hostname": "g", "slots": "4"}, "other", {"hostname": "g", "slots": "2"}],
     "host g is also given slots by entry 1"),
])
def test_bad_host_slots_are_bad_input(tmp_path, hosts, says):
    out = run_app(tmp_path, nodes=hosts, queue=["echo hi"])

    assert out.status == 2
    assert says in out.output
    assert "hosts.yaml" in out.output
    assert out.queue == ["echo hi"]


# ---------------------------------------------------------------- broadcast

def test_broadcast_runs_once_per_host_with_all_its_slots(tmp_path):
    out = run_app(tmp_path, mode="b", nodes=[{"hostname": "g", "slots": "4"}, "plain"],
                  queue=["setup {{hostname}} {{slots}}"])

    assert sorted(j.command for j in out.jobs) == ["setup g 0,1,2,3", "setup plain 0"]
    assert out.status == 0


# ---------------------------------------------------------------- property

requests = st.tuples(st.sampled_from([1, 1, 2, 4]), st.sampled_from([None, "buddy"]),
                     st.floats(0, 0.004))


@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(requests, min_size=1, max_size=12),
       st.lists(st.sampled_from([1, 2, 4, 8]), min_size=1, max_size=3))
def test_property_no_two_running_jobs_share_a_slot(tmp_path_factory, reqs, sizes):
    tmp_path = tmp_path_factory.mktemp("prop")
    largest = max(sizes)
    queue = [job(f"j{i}", min(count, largest), policy) for i, (count, policy, _) in
             enumerate(reqs)]
    hosts = [{"hostname": f"h{i}", "slots": str(n)} for i, n in enumerate(sizes)]
    durations = {entry["name"]: d for entry, (_, _, d) in zip(queue, reqs)}
    out = run_loop(tmp_path, nodes=hosts, queue=queue,
                   scripts=_durations(durations, sizes))

    assert out.status == 0
    check_schedule(out, queue)


def _durations(durations, sizes):
    """A FakeJob per possible rendered command (host, slots) of each job."""
    scripts = {}
    for name, seconds in durations.items():
        for i, size in enumerate(sizes):
            for start in range(size):
                for count in (1, 2, 4, 8):
                    if start + count <= size:
                        slots = ",".join(map(str, range(start, start + count)))
                        scripts[f"job {name} on h{i} slots {slots}"] = FakeJob(
                            duration=seconds)
    return scripts


def test_a_slot_request_on_hosts_without_slots_says_how_to_give_them(tmp_path):
    out = run_app(tmp_path, nodes=["n1", "n2"], queue=[job("two", 2)])

    assert out.status == 2
    assert "slots: 2 is more than any host has: the largest host, n1, has 1 slot;" in out.output
    assert "give hosts 'slots: N' in hosts.yaml" in out.output
