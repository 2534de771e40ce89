"""GPU slots end to end: the real ``pegasus q`` on real sshd nodes and on localhost.

Every job appends ``start``/``end`` lines with its name, host, ``{{slots}}``
and a nanosecond clock to one log (the test nodes share this machine's file
system and clock); ``check_log`` proves from it that no two jobs on one host
ever held a slot at the same time, that each got its count, and that
``buddy`` blocks are aligned. consumed.yaml proves queue order.
"""
import os
import re
import signal
import subprocess
import sys
import uuid

import pytest
import yaml

from helpers import read, wait_for, write

LINE = re.compile(r"^(start|end) (\S+) (\S+) (\S+) (\d+)$")
TAKEN = re.compile(r"^# taken \S+ \S+(?: #\d+)? for \[(\S+) slots (\S+)\]$", re.M)
QUEUE = [("a", 1, None), ("b", 2, None), ("c", 4, None), ("d", 1, None),
         ("e", 2, "buddy"), ("f", 4, "buddy"), ("g", 1, None), ("h", 2, None),
         ("i", 1, None), ("j", 4, None)]

CLUSTER = pytest.param("cluster", marks=pytest.mark.sshd)


def slot_queue(log, pause="0.3"):
    entries = []
    for name, count, policy in QUEUE:
        stamp = "{{hostname}} {{slots}} $(date +%s%N)"
        entry = {"command": f"echo start {name} {stamp} >> {log}; sleep {pause}; "
                            f"echo end {name} {stamp} >> {log}",
                 "slots": str(count)}
        if policy:
            entry["allocation_policy"] = policy
        entries.append(entry)
    return entries


def check_log(text):
    """{name: (host, slots)}; fails on any shared slot, wrong count or misaligned block."""
    runs = {}
    for line in text.splitlines():
        what, name, host, slots, clock = LINE.match(line).groups()
        run = runs.setdefault(name, {"host": host, "slots": slots})
        assert (run["host"], run["slots"]) == (host, slots), line
        run[what] = int(clock)
    wanted = {name: (count, policy) for name, count, policy in QUEUE}
    assert sorted(runs) == sorted(wanted)
    for name, run in runs.items():
        slots = [int(s) for s in run["slots"].split(",")]
        count, policy = wanted[name]
        assert len(slots) == count == len(set(slots)), (name, run)
        if policy == "buddy":
            assert slots == list(range(slots[0], slots[0] + count)), (name, run)
            assert slots[0] % count == 0, (name, run)
    items = list(runs.items())
    for i, (a, ra) in enumerate(items):
        for b, rb in items[i + 1:]:
            if ra["host"] != rb["host"]:
                continue
            overlap = ra["start"] < rb["end"] and rb["start"] < ra["end"]
            shared = set(ra["slots"].split(",")) & set(rb["slots"].split(","))
            assert not (overlap and shared), (a, ra, b, rb)
    return {name: (run["host"], run["slots"]) for name, run in runs.items()}


@pytest.fixture
def where(request, tmp_path):
    """(hosts.yaml text, extra pegasus arguments) for two 4-slot hosts."""
    if request.param == "cluster":
        cluster = request.getfixturevalue("cluster")
        return "- hostname: [node-1, node-2]\n  slots: 4\n", ["--ssh-config",
                                                              cluster.ssh_config]
    return "- hostname: [localhost, 127.0.0.1]\n  slots: 4\n", []


@pytest.mark.parametrize("where", [CLUSTER, "localhost"], indirect=True)
def test_jobs_of_1_2_and_4_slots_never_share_a_slot(where, tmp_path, run_pegasus):
    hosts, args = where
    log = f"/tmp/pegasus-slots-{uuid.uuid4().hex}.log"
    queue = slot_queue(log)
    write(tmp_path / "hosts.yaml", hosts)
    write(tmp_path / "queue.yaml", yaml.safe_dump(queue, sort_keys=False))
    try:
        res = run_pegasus(["q", *args], cwd=tmp_path, env={"NO_COLOR": "1"}, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        got = check_log(read(log))
    finally:
        if os.path.exists(log):
            os.unlink(log)
    consumed = read(tmp_path / "consumed.yaml")
    assert yaml.load(consumed, Loader=yaml.BaseLoader) == queue  # taken in queue order
    names = [name for name, _, _ in QUEUE]
    assert TAKEN.findall(consumed) == [got[name] for name in names]  # the slots it says
    for number, name in enumerate(names, 1):  # job ids count from 1, in queue order
        host, slots = got[name]
        assert f"[{host} slots {slots}] === run #{number} 'echo start {name} " in res.stdout


def test_ctrl_c_while_the_head_waits_for_slots_leaves_it_in_the_queue(tmp_path):
    """The real command on localhost: the head waits for 4 slots; Ctrl-c; it stays."""
    go = tmp_path / "go"
    started = tmp_path / "started"
    write(tmp_path / "hosts.yaml", "- hostname: localhost\n  slots: 4\n")
    head = ("- command: echo big {{slots}}\n  slots: 4\n"
            "- echo after   # comments stay too\n")
    write(tmp_path / "queue.yaml",
          f"- command: touch {started}; while [ ! -e {go} ]; do sleep 0.05; done\n"
          "  slots: 2\n" + head)
    proc = subprocess.Popen([sys.executable, "-m", "pegasus", "q"], cwd=str(tmp_path),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, NO_COLOR="1"))
    try:
        wait_for(started.exists, what="the first job to start")
        wait_for(lambda: read(tmp_path / "queue.yaml") == head, what="the first take")
        proc.send_signal(signal.SIGINT)
        write(go, "")
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert read(tmp_path / "queue.yaml") == head  # byte for byte
    assert "big" not in out.replace("echo big", "")


@pytest.mark.slow
def test_the_slot_wait_benchmark_runs():
    """benchmarks/bench_slot_wait.py --seconds 1 prints its figures (none asserted)."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks", "bench_slot_wait.py")
    res = subprocess.run([sys.executable, script, "--seconds", "1", "--behind", "5"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"pegasus CPU while the head waits\s+[0-9.]+ % of a core", res.stdout)
    assert re.search(r"exit status after the wait\s+0$", res.stdout, re.M)
