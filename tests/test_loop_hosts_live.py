"""hosts.yaml while a daemon runs (issue 15), in-process on fakes: sub-nodes added
take jobs, sub-nodes removed finish their running job and take nothing more, a bad
file is said once and the old hosts stay, a half-written file is waited for."""

from fakes import (Answer, FakeJob, append, backdate, ctrl_c, release, run_app,
                   stops_answering, when_finished, when_printed, when_queue_empty,
                   when_started, write_hosts)

HANG = FakeJob(hang=True)


def test_a_host_added_to_a_daemons_hosts_file_takes_jobs(tmp_path):
    out = run_app(tmp_path, nodes=["node-1"], queue=["echo 1"], daemon=True,
                  scripts={"echo 1": HANG}, timeout=10, actions=[
                      when_started("echo 1", write_hosts(["node-1", "node-2"])),
                      when_printed("1 sub-node added", append("- echo 2\n")),
                      when_started("echo 2", release("echo 1"), ctrl_c)])
    assert out.ran("[node-2]") == ["echo 2"]
    assert out.ran("[node-1]") == ["echo 1"]
    assert any(m.endswith("hosts.yaml changed: 1 sub-node added ([node-2]): connecting; "
                          "they take jobs once connected") for m in out.messages)
    assert [e["command"] for e in out.consumed] == ["echo 1", "echo 2"]


def test_a_removed_host_finishes_its_job_and_takes_nothing_more(tmp_path):
    out = run_app(tmp_path, nodes=["node-1", "node-2"], queue=["echo 1", "echo 2"],
                  daemon=True, scripts={"echo 1": HANG, "echo 2": HANG}, timeout=10,
                  actions=[
                      when_started("echo 2", write_hosts(["node-1"])),
                      when_printed("1 sub-node removed",
                                   append("- echo 3\n- echo 4\n"), release("echo 2")),
                      when_finished("echo 2", release("echo 1")),
                      when_finished("echo 4", ctrl_c)])
    assert {out.ran("[node-1]")[0], out.ran("[node-2]")[0]} == {"echo 1", "echo 2"}
    gone = "[node-2]" if out.ran("[node-2]") == ["echo 2"] else "[node-1]"
    assert out.ran(gone) == ["echo 2"]  # its job finished; nothing more went there
    assert sorted(out.ran("[node-1]")) == ["echo 1", "echo 3", "echo 4"]
    assert any("1 sub-node removed ([node-2]): they take nothing new; 1 running job "
               "finishing" in m for m in out.messages)
    assert out.interrupted == [] and out.queue == []
    assert sorted(e["command"] for e in out.consumed) == ["echo 1", "echo 2", "echo 3",
                                                          "echo 4"]
    assert ("[node-2]", "") in out.called("close")


def test_a_bad_hosts_file_is_said_once_and_the_old_hosts_stay_until_it_is_fixed(tmp_path):
    bad = "- node-1\n- hostname: node-2\n  slots: many\n"
    out = run_app(tmp_path, nodes=["node-1"], queue=[], daemon=True, timeout=10,
                  scripts={"echo 1": FakeJob(heartbeats=20)}, actions=[
                      when_queue_empty(write_hosts(bad)),
                      when_printed("slots: many", write_hosts(bad), append("- echo 1\n")),
                      when_started("echo 1", write_hosts(bad + "# again\n")),
                      when_finished("echo 1", write_hosts(["node-1", "node-2"])),
                      when_printed("1 sub-node added", append("- echo 2\n- echo 3\n")),
                      when_finished("echo 3", ctrl_c)])
    said = [m for m in out.messages if "slots: many" in m]
    assert len(said) == 1
    assert "hosts.yaml:2 (entry 2)" in said[0]
    assert "the hosts of the run are kept until the file is fixed" in out.output
    assert out.ran("[node-1]")[0] == "echo 1"  # the old set ran while the file was bad
    assert sorted(out.ran("[node-1]") + out.ran("[node-2]")) == ["echo 1", "echo 2",
                                                                 "echo 3"]


def test_a_half_written_hosts_file_is_waited_for_not_reported(tmp_path):
    half = "- node-1\n- hostname: node-2\n  slots:"
    out = run_app(tmp_path, nodes=["node-1"], queue=["echo 1"], daemon=True, timeout=10,
                  quiet=60.0,  # a file just written is not at rest during the test
                  scripts={"echo 1": FakeJob(heartbeats=20)}, actions=[
                      when_started("echo 1", write_hosts(half)),
                      when_finished("echo 1", write_hosts(half + " 2\n", backdated=True)),
                      when_printed("host node-2: connected",
                                   append("- {command: echo 2, slots: 2}\n"), backdate()),
                      when_finished("echo 2", ctrl_c)])
    assert not any("slots" in m and "added" not in m for m in out.messages), out.output
    assert any(m.endswith("hosts.yaml changed: 2 sub-nodes added ([node-2]): connecting; "
                          "they take jobs once connected") for m in out.messages)
    assert "host node-2: connected; taking jobs" in out.messages  # said once, not "again"
    assert out.ran("[node-2]") == ["echo 2"], out.output  # the host added, with its 2 slots
    assert "[node-2 slots 0,1] === run #2 'echo 2' ===" in out.output


def test_a_removed_host_that_hangs_during_its_last_job_has_it_reported_lost(tmp_path):
    """Removed from hosts.yaml while its job runs, then not responding: the job is
    given up on (interrupted, outcome unknown) as on any host, not waited for
    forever; the host is not reconnected (it is gone)."""
    out = run_app(tmp_path, nodes=["node-1", "node-2"], queue=["echo 1", "echo 2"],
                  daemon=True, scripts={"echo 2": HANG}, timeout=10, actions=[
                      when_started("echo 2", write_hosts(["node-1"])),
                      when_printed("1 sub-node removed", stops_answering("node-2")),
                      when_printed("=== done (connection lost", append("- echo 3\n")),
                      when_finished("echo 3", ctrl_c)])
    assert "host node-2: not responding for 30 s; its 1 running job is reported lost" \
        in out.output, out.output
    assert [e["command"] for e in out.interrupted] == ["echo 2"]
    assert out.ran("[node-1]") == ["echo 1", "echo 3"]
    assert "reconnecting" not in out.output


def test_broadcast_applies_a_change_between_steps(tmp_path):
    out = run_app(tmp_path, mode="b", nodes=["node-1", "node-2"], queue=["step 1"],
                  daemon=True, scripts={"step 1": HANG}, timeout=10, actions=[
                      when_started("step 1", write_hosts(["node-1", "node-3"]), nth=2),
                      when_printed("host node-3: connected", append("- step 2\n"),
                                   release("step 1")),
                      when_finished("step 2", ctrl_c, nth=2)])
    assert out.ran("[node-1]") == ["step 1", "step 2"]
    assert out.ran("[node-2]") == ["step 1"]  # removed during step 1: it finished it
    assert out.ran("[node-3]") == ["step 2"]  # added during step 1: from step 2 on
    assert "not connected" not in out.output
    assert [e["command"] for e in out.consumed] == ["step 1", "step 2"]


def test_a_host_removed_while_it_cannot_be_reached_is_tried_no_more(tmp_path):
    tried = []  # how many connection attempts were made when the removal was said
    out = run_app(tmp_path, nodes=["node-1"], queue=[], daemon=True, timeout=10,
                  hosts={"node-9": [Answer.DOWN]}, actions=[
                      when_queue_empty(write_hosts(["node-1", "node-9"])),
                      when_printed("fake: no answer", write_hosts(["node-1"])),
                      when_printed("1 sub-node removed",
                                   lambda fake: tried.append(len(fake.connects)),
                                   append("- echo 1\n")),
                      when_finished("echo 1", ctrl_c)])
    assert out.status == 130
    assert "1 sub-node removed ([node-9]): they take nothing new" in out.output
    assert [host for host, _ in out.connects[tried[0]:]] == []  # no attempt after it
    assert out.ran("[node-1]") == ["echo 1"]
    assert "internal error" not in out.output and "Traceback" not in out.output


def test_a_sub_node_added_to_a_host_already_up_is_connected_not_again(tmp_path):
    out = run_app(tmp_path, nodes=["node-1"], queue=[], daemon=True, timeout=10, actions=[
        when_queue_empty(write_hosts(["node-1", {"hostname": "node-1", "gpu": "1"}])),
        when_printed("host node-1: connected", ctrl_c)])
    assert "1 sub-node added ([node-1 (gpu=1)])" in out.output
    assert "host node-1: connected; taking jobs" in out.messages


def test_a_daemon_keeps_to_limit_and_exclude_when_hosts_yaml_changes(tmp_path):
    # hosts added to hosts.yaml are selected as at start: --exclude keeps node-3 out
    out = run_app(tmp_path, nodes=["node-1", "node-3"], queue=["echo 1"], daemon=True,
                  scripts={"echo 1": HANG}, timeout=10,
                  options=["--exclude", "node-3"], actions=[
                      when_started("echo 1", write_hosts(["node-1", "node-2", "node-3"])),
                      when_printed("1 sub-node added", append("- echo 2\n")),
                      when_started("echo 2", release("echo 1"), ctrl_c)])
    assert out.ran("[node-2]") == ["echo 2"]
    assert out.ran("[node-3]") == []
    assert any("hosts.yaml changed: 1 sub-node added ([node-2])" in m for m in out.messages)


def test_a_hosts_file_of_which_limit_keeps_no_host_is_said_once_and_the_old_hosts_stay(tmp_path):
    out = run_app(tmp_path, nodes=["node-1"], queue=["echo 1"], daemon=True,
                  scripts={"echo 1": HANG}, timeout=10,
                  options=["--limit", "node-*"], actions=[
                      when_started("echo 1", write_hosts(["other-1"])),
                      when_printed("matches no host", append("- echo 2\n"), release("echo 1")),
                      when_finished("echo 2", ctrl_c)])
    said = [m for m in out.messages if "matches no host" in m]
    assert len(said) == 1 and "hosts.yaml" in said[0]
    assert "the hosts of the run are kept until the file is fixed" in out.output
    assert out.ran("[node-1]") == ["echo 1", "echo 2"]


def test_a_host_removed_from_hosts_yaml_is_not_listed_as_unreachable(tmp_path):
    out = run_app(tmp_path, nodes=["node-1", "node-2"], queue=["echo 1"], daemon=True,
                  timeout=10, actions=[
                      when_finished("echo 1", write_hosts(["node-1"])),
                      when_printed("1 sub-node removed", ctrl_c)])
    assert not (tmp_path / "unreachable-hosts.txt").exists()
    assert "unreachable" not in out.output


def test_a_hosts_file_an_editor_deletes_and_writes_again_is_not_said_missing(tmp_path,
                                                                             monkeypatch):
    """Some editors save by deleting the file and writing it anew: a file gone for
    less than ``atrest.QUIET`` s is being written, not removed. Gone longer, it is
    said once (the old hosts stay)."""
    import os

    from pegasus import atrest, hostswatch
    path = tmp_path / "hosts.yaml"
    path.write_text("- node-1\n")
    source = hostswatch.Source.before_reading(str(path), False)
    watch = hostswatch.Watch(source, source.read(), lambda event: None)
    monkeypatch.setattr(atrest, "QUIET", 60.0)

    path.unlink()
    assert watch.look() is None  # gone a moment
    path.write_text("- node-1\n- node-2\n")
    os.utime(path, (1, 1))  # written long ago: at rest
    event = watch.look()
    assert event.error is None and [n.hostname for n in event.added] == ["node-2"]

    monkeypatch.setattr(atrest, "QUIET", 0.0)
    path.unlink()
    event = watch.look()
    assert "hosts.yaml" in str(event.error) and "not found" in str(event.error)
    assert watch.look() is None  # said once


def test_a_host_added_with_several_sub_nodes_that_refuses_us_is_said_once(tmp_path):
    """Each of its sub-nodes' first connections is refused (a changed key, a
    Slurm partition that does not exist): one message for the host, not one a
    sub-node."""
    added = {"hostname": "node-9", "slot": ["a", "b", "c"]}
    out = run_app(tmp_path, nodes=["node-1"], queue=[], daemon=True, timeout=10,
                  hosts={"node-9": [Answer.KEY_CHANGED]}, actions=[
                      when_queue_empty(write_hosts(["node-1", added])),
                      when_printed("left out for the rest of the run", append("- echo 1\n")),
                      when_finished("echo 1", ctrl_c)])
    refused = [m for m in out.messages if "left out for the rest of the run" in m]
    assert refused == ["host node-9: fake: host key changed; it is left out for the rest "
                       "of the run"], out.output
    assert out.ran("[node-1]") == ["echo 1"]
