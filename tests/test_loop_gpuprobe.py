"""GPUs in foreign use, on fake hosts: the probe's answers are scripted per host.

A host with ``gpu_probe: nvidia-smi`` runs ``nvidia-smi <query>`` on one of
its lanes before Pegasus places jobs there; the fakes answer each query as
scripted (``probe``), so a test says what nvidia-smi prints on which host,
and changes it mid-run (``rescript``). Jobs render their name, host and
``{{slots}}``, so what a host ran says which GPUs each job got.
"""
import re

import pytest

from fakes import (Answer, FakeJob, release, rescript, run_app, run_loop, when_printed,
                   when_started)
from pegasus.gpuprobe import APPS_QUERY, GPU_QUERY

JOB = "job {{name}} on {{hostname}} slots {{slots}}"
RAN = re.compile(r"^job (\S+) on (\S+) slots (\S+)$")
DRIVER = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"


def job(name, slots=None):
    entry = {"command": JOB, "name": name}
    if slots is not None:
        entry["slots"] = str(slots)
    return entry


def host(name, slots, **settings):
    return dict({"hostname": name, "slots": str(slots), "gpu_probe": "nvidia-smi"},
                **{k: str(v) for k, v in settings.items()})


def gpu_lines(*used):
    return "".join(f"{i}, GPU-{i}, {mib}, 81559\n" for i, mib in enumerate(used))


def probe(name, gpus, apps="", exit=0):
    """Scripts: what ``nvidia-smi`` prints on host ``name`` for each query."""
    return {(name, f"nvidia-smi {GPU_QUERY}"): FakeJob(chunks=(("stdout", gpus.encode()),),
                                                       exit=exit),
            (name, f"nvidia-smi {APPS_QUERY}"): FakeJob(chunks=(("stdout", apps.encode()),))}


def placed(out):
    """[(name, host, slots)] of the jobs (not the probes), in start order."""
    found = []
    for ran in out.jobs:
        match = RAN.match(ran.command)
        if match:
            name, where, slots = match.groups()
            found.append((name, where, slots))
    return found


def probes(out, name):
    return [ran for ran in out.jobs if ran.node == f"[{name}]" and "--query-gpu" in ran.command]


def said(out, text):
    return [m for m in out.messages if text in m]


# ---------------------------------------------------------------- foreign use

def test_a_gpu_with_a_foreign_process_never_gets_a_job(tmp_path):
    queue = [job(n) for n in "abcd"]
    out = run_loop(tmp_path, nodes=[host("g", 2)], queue=queue,
                   scripts=probe("g", gpu_lines(3, 3), "GPU-1, 4242, 0\n"))

    assert placed(out) == [(n, "g", "0") for n in "abcd"]
    assert said(out, "skipping") == ["host g: skipping GPU 1, in use by others (GPU 1: 1 "
                                     "compute process (pid 4242)); it takes no job until "
                                     "it is free"]
    assert out.status == 0 and out.queue == []


def test_a_gpu_using_more_memory_than_gpu_busy_mib_is_skipped(tmp_path):
    out = run_loop(tmp_path, nodes=[host("g", 2)], queue=[job("a"), job("b")],
                   scripts=probe("g", gpu_lines(2000, 1024)))

    assert placed(out) == [("a", "g", "1"), ("b", "g", "1")]  # 1024 is not more than 1024
    assert said(out, "skipping GPU 0") == [
        "host g: skipping GPU 0, in use by others (GPU 0: 2000 MiB used, more than "
        "gpu_busy_mib 1024); it takes no job until it is free"]


def test_gpu_busy_mib_is_a_host_setting(tmp_path):
    out = run_app(tmp_path, nodes=[host("g", 2, gpu_busy_mib=4096)],
                  queue=[job("a", 2)], scripts=probe("g", gpu_lines(2000, 0)))

    assert placed(out) == [("a", "g", "0,1")]
    assert said(out, "skipping") == []
    assert out.status == 0


def test_a_gpu_freed_by_others_is_used_and_pegasus_says_so(tmp_path):
    free = probe("g", gpu_lines(3, 3))
    out = run_loop(tmp_path, nodes=[host("g", 2)], queue=[job("big", 2), job("small")],
                   scripts=probe("g", gpu_lines(3, 3), "GPU-0, 99, 512\n"),
                   actions=[when_printed("skipping GPU 0", *(
                       rescript(key, script) for key, script in free.items()))])

    assert placed(out) == [("big", "g", "0,1"), ("small", "g", "0")]
    assert said(out, "GPU") == [
        "host g: skipping GPU 0, in use by others (GPU 0: 1 compute process (pid 99)); it "
        "takes no job until it is free",
        "host g: no GPU is in use by others now"]
    assert out.status == 0  # it waited for the GPUs rather than giving up


def test_waiting_for_a_gpu_in_foreign_use_does_not_reread_the_queue(tmp_path):
    busy = probe("g", gpu_lines(3, 3), "GPU-1, 99, 512\n")
    free = probe("g", gpu_lines(3, 3))
    out = run_loop(tmp_path, nodes=[host("g", 2)], queue=[job("big", 2)], scripts=busy,
                   actions=[when_started(f"nvidia-smi {GPU_QUERY}", *(
                       rescript(key, script) for key, script in free.items()), nth=30)])

    assert placed(out) == [("big", "g", "0,1")]
    assert len(probes(out, "g")) >= 30  # rechecked while it waited...
    assert out.takes <= 4  # ...but the queue was looked at only when an answer freed a GPU


def test_pegasus_own_jobs_are_never_taken_for_foreign_use(tmp_path):
    # The second probe sees a process on GPU 0 while Pegasus's job "a" runs there: that
    # is not someone else's. Once "a" ends, "b" gets both GPUs.
    scripts = probe("g", gpu_lines(3, 3))
    scripts[("g", f"nvidia-smi {APPS_QUERY}")] = [
        FakeJob(chunks=(("stdout", b"GPU-1, 77, 100\n"),)),
        FakeJob(chunks=(("stdout", b"GPU-0, 4242, 30000\n"),))]
    scripts["job a on g slots 0"] = FakeJob(hang=True)
    out = run_loop(tmp_path, nodes=[host("g", 2)], queue=[job("a"), job("b", 2)],
                   scripts=scripts,
                   actions=[when_printed("no GPU is in use by others now",
                                         release("job a on g slots 0"))])

    assert placed(out) == [("a", "g", "0"), ("b", "g", "0,1")]
    assert said(out, "GPU") == [
        "host g: skipping GPU 1, in use by others (GPU 1: 1 compute process (pid 77)); it "
        "takes no job until it is free",
        "host g: no GPU is in use by others now"]
    assert out.status == 0


# ---------------------------------------------------------------- failing probes

@pytest.mark.parametrize("script, why", [
    (probe("g1", DRIVER + "\n", exit=9),
     f"'nvidia-smi {GPU_QUERY}' exited with status 9: {DRIVER}"),
    (probe("g1", "sh: 1: nvidia-smi: not found\n", exit=127),
     f"'nvidia-smi {GPU_QUERY}' exited with status 127: sh: 1: nvidia-smi: not found"),
    (probe("g1", "0, GPU-0, lots, 81559\n"),
     f"'nvidia-smi {GPU_QUERY}' printed what is not nvidia-smi's answer: line 1: "
     "memory.used 'lots' is not a whole number"),
    (probe("g1", gpu_lines(0, 0), "garbage\n"),
     f"'nvidia-smi {APPS_QUERY}' printed what is not nvidia-smi's answer: line 1 "
     "('garbage') is not 'gpu_uuid, pid, used_memory'"),
    ({("g1", f"nvidia-smi {GPU_QUERY}"): FakeJob(hang=True)},
     f"'nvidia-smi {GPU_QUERY}' did not answer in 0.05 s"),
])
def test_a_failing_probe_sends_jobs_to_other_hosts(tmp_path, script, why):
    out = run_loop(tmp_path, nodes=[host("g1", 2), host("g2", 2)],
                   queue=[job(n) for n in "abc"], scripts={**probe("g2", gpu_lines(0, 0)),
                                                                **script})

    assert [where for _, where, _ in placed(out)] == ["g2"] * 3
    assert said(out, "g1") == [f"host g1: its GPU probe failed: {why}; it takes no job "
                               "until a probe succeeds (Pegasus tries again)"]
    assert out.status == 0


def test_a_failing_probe_is_tried_again_and_the_host_used_once_it_works(tmp_path):
    works = probe("g", gpu_lines(0, 0))
    out = run_loop(tmp_path, nodes=[host("g", 2)], queue=[job("a", 2)],
                   scripts=probe("g", DRIVER + "\n", exit=9),
                   actions=[when_printed("its GPU probe failed", *(
                       rescript(key, script) for key, script in works.items()))])

    assert placed(out) == [("a", "g", "0,1")]
    assert said(out, "probe") == [
        f"host g: its GPU probe failed: 'nvidia-smi {GPU_QUERY}' exited with status 9: "
        f"{DRIVER}; it takes no job until a probe succeeds (Pegasus tries again)",
        "host g: its GPU probe works again"]


def test_a_probe_whose_connection_fails_takes_the_host_down_and_back(tmp_path):
    scripts = probe("g1", gpu_lines(0))
    query = ("g1", f"nvidia-smi {GPU_QUERY}")
    scripts[query] = [FakeJob(not_started=True), scripts[query]]
    out = run_loop(tmp_path, nodes=[host("g1", 1)], queue=[job("a")], scripts=scripts)

    assert placed(out) == [("a", "g1", "0")]
    assert said(out, "g1: connection lost") != []
    assert said(out, "probe failed") == []  # a lost connection is the host's, not the GPUs'
    assert out.status == 0


def test_a_job_waits_for_the_first_answer_of_an_earlier_host(tmp_path):
    # hosts.yaml order is kept: g1's answer is awaited rather than the job sent to g2
    out = run_loop(tmp_path, nodes=[host("g1", 1), {"hostname": "g2", "slots": "1"}],
                   queue=[job("a")], scripts=probe("g1", gpu_lines(0)))

    assert placed(out) == [("a", "g1", "0")]


def test_hosts_without_a_probe_are_never_probed(tmp_path):
    out = run_loop(tmp_path, nodes=[{"hostname": "g", "slots": "2"}], queue=[job("a")])

    assert [ran.command for ran in out.jobs] == ["job a on g slots 0"]


def test_broadcast_does_not_probe(tmp_path):
    out = run_app(tmp_path, mode="b", nodes=[host("g", 2)], queue=["setup {{slots}}"],
                  scripts=probe("g", gpu_lines(0, 0), "GPU-0, 1, 1\n"))

    assert [ran.command for ran in out.jobs] == ["setup 0,1"]
    assert out.status == 0


def test_a_head_that_fits_nowhere_still_ends_a_run_with_a_clean_probed_host(tmp_path):
    out = run_loop(tmp_path, nodes=[host("g", 2), {"hostname": "big", "slots": "4"}],
                   queue=[job("a"), job("huge", 4)], scripts=probe("g", gpu_lines(0, 0)),
                   hosts={"big": [Answer.LOGIN_REFUSED]})

    assert placed(out) == [("a", "g", "0")]
    assert any("needs more slots than any host that is up has free" in m
               for m in out.messages)
    assert out.status != 0


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("entry, says", [
    ({"hostname": "g", "gpu_probe": "nvidia-smi"},
     "'gpu_probe' needs 'slots' on the same entry (slot i is GPU i); add e.g. 'slots: 8'"),
    ({"hostname": "g", "gpu_busy_mib": "10"}, "'gpu_busy_mib' needs 'slots' on the same entry"),
    ({"hostname": "g", "slots": "2", "gpu_busy_mib": "10"},
     "'gpu_busy_mib' only matters with 'gpu_probe'; add e.g. 'gpu_probe: nvidia-smi'"),
    (host("g", 2, gpu_busy_mib="lots"),
     "'gpu_busy_mib: lots' is not a whole number of MiB; give 0 or more, e.g. "
     "'gpu_busy_mib: 1024' (the default)"),
    (host("g", 2, gpu_busy_mib="-1"), "'gpu_busy_mib: -1' is not a whole number of MiB"),
    (host("g", 2, gpu_busy_mib="1.5"), "'gpu_busy_mib: 1.5' is not a whole number of MiB"),
    (dict(host("g", 2), gpu_probe=["nvidia-smi", "docker exec t nvidia-smi"]),
     "'gpu_probe' is a list; a host has one, e.g. 'gpu_probe: nvidia-smi'"),
    (dict(host("g", 2), gpu_probe=""), "'gpu_probe' has an empty value"),
])
def test_bad_gpu_probe_settings_are_bad_input(tmp_path, entry, says):
    out = run_app(tmp_path, nodes=[entry], queue=[job("a")])

    assert out.status == 2
    assert says in out.output
    assert "hosts.yaml" in out.output and "entry 1" in out.output
    assert out.jobs == [] and out.queue == [job("a")]


def test_the_probe_settings_are_not_template_names(tmp_path):
    out = run_app(tmp_path, nodes=[host("g", 2, gpu_busy_mib=10)],
                  queue=["echo {{gpu_probe}} {{gpu_busy_mib}}"])

    assert out.status == 2
    assert "gpu_probe" in out.output
    assert out.jobs == []


def test_a_one_item_list_is_one_probe_command(tmp_path):
    entry = dict(host("g", 1), gpu_probe=["docker exec trainer nvidia-smi"])
    scripts = {(("g", f"docker exec trainer nvidia-smi {q}")): FakeJob(chunks=(
        ("stdout", text.encode()),)) for q, text in ((GPU_QUERY, gpu_lines(0)),
                                                     (APPS_QUERY, ""))}
    out = run_app(tmp_path, nodes=[entry], queue=[job("a")], scripts=scripts)

    assert placed(out) == [("a", "g", "0")]
    assert out.status == 0
