"""``pegasus status``, ``stop`` and ``kill`` from another terminal (issue 12), on
the in-process loop: the real client in a thread against the run's real control
socket (``fakes.pegasus``), fake hosts."""
import fcntl
import json
import os
import socket
import shutil
import subprocess
import sys
import time

import gevent
import pytest
import yaml
from fakes import (FakeJob, control_client, ctrl_c, deferred, pegasus, release, run_app,
                   run_loop, when_printed, when_started, write_hosts)

from pegasus import control

TWO = ("node-1", "node-2")
HANG = FakeJob(hang=True)


def test_status_json_shows_the_running_jobs_sub_nodes_and_counts(tmp_path):
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b", {"command": "c {{x}}", "x": [1, 2]}],
                   scripts={"a": HANG, "b": HANG},
                   actions=[when_started("b", pegasus("status --json", "status",
                                                      release("a"), release("b")))])

    status, text = out.snapshots["status"]
    doc = json.loads(text)
    assert status == 0 and out.status == 0
    assert doc["pid"] == os.getpid() and doc["pids"] == [os.getpid()]
    assert doc["queue"] == os.path.realpath(tmp_path / "queue.yaml")
    assert (doc["mode"], doc["state"], doc["daemon"]) == ("queue", "running", False)
    assert sorted((j["id"], j["node"], j["command"], j["slots"]) for j in doc["running"]) == [
        (1, "[node-1]", "a", []), (2, "[node-2]", "b", [])]
    assert all(j["elapsed"] >= 0 and j["started"] >= doc["started"] for j in doc["running"])
    assert doc["counts"] == {"queued_entries": 1, "queued_jobs": 2, "done": 2, "failed": 0,
                             "interrupted": 0}
    assert doc["run"] == {"done": 0, "running": 2, "failed": 0}
    assert [(n["name"], n["state"]) for n in doc["nodes"]] == [("[node-1]", "up"),
                                                              ("[node-2]", "up")]


def test_status_in_words_names_each_running_job(tmp_path):
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b"], scripts={"a": HANG},
                   actions=[when_started("a", pegasus("status", "status", release("a")))])

    status, text = out.snapshots["status"]
    assert status == 0
    assert f"Pegasus (pid {os.getpid()}) runs {os.path.realpath(tmp_path / 'queue.yaml')} " \
           "in queue mode since " in text
    assert "  #1 [node-1] 0:00 'a'" in text
    assert "sub-nodes: 2 up" in text


def test_kill_stops_that_job_only_reports_it_killed_by_user_and_the_queue_goes_on(tmp_path):
    out = run_app(tmp_path, nodes=TWO, queue=["a", "b", "c"], scripts={"a": HANG, "b": HANG},
                  actions=[when_started("b", pegasus("kill 1", "kill",
                                                     deferred(release("b"))))])

    status, text = out.snapshots["kill"]
    assert status == 0
    assert "killing job #1 (TERM to its process group, then KILL 3 s later)" in text
    assert [(job.command, job.status) for job in out.jobs] == [("a", 143), ("b", 0),
                                                               ("c", 0)]
    assert out.called("cancel") == [("[node-1]", "a")]
    assert "pegasus kill: stopping 1 job (#1 on [node-1]; TERM, then KILL 3 s later)" \
        in out.messages
    assert "  [node-1] #1 'a' (killed by user, exit 143)" in out.messages
    assert out.status == 1
    failed = (tmp_path / "failed.yaml").read_text()
    assert "for [node-1]: killed by user, exit 143" in failed and "- command: a" in failed
    rows = [line.split("\t") for line in (tmp_path / "logs" / "joblog.tsv").read_text()
            .splitlines()[1:]]
    assert sorted((r[0], r[7]) for r in rows) == [("1", "killed"), ("2", "ok"), ("3", "ok")]


def test_kill_of_a_job_that_is_not_running_kills_nothing(tmp_path):
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b"], scripts={"a": HANG, "b": HANG},
                   actions=[when_started("b", pegasus("kill 2 7", "kill",
                                                      release("a"), release("b")))])

    status, text = out.snapshots["kill"]
    assert status == 2
    assert text == ("pegasus: job #7 is not running (running now: #1, #2); nothing was "
                    "killed\n")
    assert out.called("cancel") == []
    assert out.status == 0


def test_stop_acts_as_the_first_ctrl_c(tmp_path):
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b", "c"], scripts={"a": HANG, "b": HANG},
                   actions=[when_started("b", pegasus("stop", "stop", release("a"),
                                                      release("b")))])

    assert out.snapshots["stop"] == (0, f"Pegasus (pid {os.getpid()}): takes no more jobs; "
                                        "2 running jobs finish first\n")
    assert out.called("cancel") == []
    assert out.queue == ["c"]
    assert out.messages[:2] == [
        "pegasus stop: asked from another terminal",
        "pegasus stop: no new jobs will start and the queue file is left as it is; "
        "waiting for 2 running jobs to finish (pegasus stop --now stops them)"]
    assert out.messages[-1] == "interrupted by pegasus stop"
    assert out.status == 130


def test_stop_now_acts_as_the_second_ctrl_c(tmp_path):
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b", "c"], scripts={"a": HANG, "b": HANG},
                   actions=[when_started("b", pegasus("stop --now", "stop"))])

    assert out.snapshots["stop"][0] == 0
    assert [(job.command, job.status) for job in out.jobs] == [("a", 143), ("b", 143)]
    assert "stopping 2 running jobs" in out.messages
    assert not any("waiting for" in m for m in out.messages), out.messages  # not "stop"'s
    assert out.queue == ["c"]
    assert out.status == 130


def test_with_no_pegasus_running_status_shows_the_queue_and_stop_kill_refuse(tmp_path):
    (tmp_path / "queue.yaml").write_text("- a\n- command: b {{x}}\n  x: [1, 2, 3]\n")
    (tmp_path / "failed.yaml").write_text("# failed 2026-12-06 10:00:00 for [n]: exit 1\n"
                                          "- command: z\n")
    queue = str(tmp_path / "queue.yaml")

    status, text = control_client(["status", "-Q", queue])
    assert status == 3
    assert text == (f"no Pegasus runs on {os.path.realpath(queue)}\n"
                    "queue: 2 entries (4 jobs) queued; 0 taken (consumed.yaml), 1 failed "
                    "(failed.yaml), 0 interrupted (interrupted.yaml)\n")
    status, text = control_client(["status", "--json", "-Q", queue])
    assert status == 3
    assert json.loads(text)["pid"] is None and json.loads(text)["counts"]["queued_jobs"] == 4
    for args, what in ((["stop"], "stop"), (["stop", "--now"], "stop"), (["kill", "3"], "kill")):
        assert control_client([*args, "-Q", queue]) == (
            3, f"pegasus: no Pegasus runs on {os.path.realpath(queue)}: nothing to {what} "
               "(give the queue file of the run with -Q)\n")


def test_a_stale_socket_of_a_killed_pegasus_fools_nobody(tmp_path):
    queue = str(tmp_path / "queue.yaml")
    (tmp_path / "queue.yaml").write_text("- a\n")
    stale = control.socket_path(queue, 999999, control.folder(create=True))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(stale)  # bound, never listening: what a kill -9 leaves
    dead.close()

    assert control_client(["stop", "-Q", queue])[0] == 3
    assert not os.path.exists(stale)  # removed by the first one to find it
    out = run_loop(tmp_path, queue=["a"], scripts={"a": HANG},
                   actions=[when_started("a", pegasus("status", "status", release("a")))])
    assert out.snapshots["status"][0] == 0 and out.status == 0


def test_each_pegasus_answers_only_for_its_own_queue(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "queue.yaml").write_text("- x\n")
    out = run_loop(tmp_path, queue=["a"], scripts={"a": HANG},
                   actions=[when_started("a", pegasus(f"stop -Q {other}/queue.yaml", "other",
                                                      release("a")))])

    status, text = out.snapshots["other"]
    assert status == 3 and "no Pegasus runs on" in text and "other/queue.yaml" in text
    assert out.status == 0  # the run on its own queue was not stopped


def test_a_control_folder_open_to_others_is_refused_and_the_run_goes_on(tmp_path):
    folder = control.folder(create=True)
    os.chmod(folder, 0o755)
    out = run_loop(tmp_path, queue=["a"], scripts={"a": HANG},
                   actions=[when_started("a", pegasus("status", "status", release("a")))])

    status, text = out.snapshots["status"]
    assert status == 3
    assert f"{folder} is not a folder private to you" in text
    assert "pegasus status, stop and kill cannot reach this run; it goes on" in out.output
    assert out.status == 0


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv")
                    or not os.path.exists("/usr/bin/python3"),
                    reason="needs root, setpriv and /usr/bin/python3, to act as another "
                           "user (nobody, uid 65534)")
def test_another_local_user_cannot_control_a_run(tmp_path):
    """The folder is 0700; and should it be opened, the socket checks its peer's uid."""
    script = ("import json, socket, sys\n"
              "s = socket.socket(socket.AF_UNIX); s.settimeout(5)\n"
              "try:\n    s.connect(sys.argv[1])\n"
              "except OSError as e:\n    print('refused', e.errno); sys.exit()\n"
              "try:\n    s.sendall(json.dumps({'request': 'stop', 'now': True}).encode()"
              " + b'\\n')\n"
              "except BrokenPipeError:\n    pass  # refused before it read the request\n"
              "print(s.makefile().readline().strip() or 'closed')\n")

    def tries(path):
        answers = []
        paths = [os.path.dirname(os.path.dirname(path)), os.path.dirname(path), path]
        for modes in ((0o700, 0o700, 0o600), (0o711, 0o777, 0o777)):  # as made; then
            for where, mode in zip(paths, modes):                      # opened to all
                os.chmod(where, mode)
            done = subprocess.run(NOBODY + ["/usr/bin/python3", "-c", script, path],
                                  capture_output=True, text=True)
            answers.append(done.stdout.strip() or done.stderr.strip()[-300:])
        for where, mode in zip(paths, (0o700, 0o700, 0o600)):
            os.chmod(where, mode)
        return answers

    def as_nobody(fake):  # in a thread: the run goes on and answers meanwhile
        path = control.sockets(fake.queue_path)[0][1]
        fake.snapshots["nobody"] = gevent.get_hub().threadpool.apply(tries, (path,))
        release("a")(fake)
    out = run_loop(tmp_path, queue=["a", "b"], scripts={"a": HANG},
                   actions=[when_started("a", deferred(as_nobody))])

    assert out.snapshots["nobody"] == [
        "refused 13", '{"error": "this Pegasus belongs to another user"}']
    assert [job.command for job in out.jobs] == ["a", "b"]  # neither stopped nor killed
    assert "pegasus stop" not in out.output
    assert out.status == 0


def test_stop_twice_is_still_the_first_ctrl_c(tmp_path):
    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b", "c"], scripts={"a": HANG, "b": HANG},
                   actions=[when_started("b", pegasus("stop", "first", pegasus(
                       "stop", "second", release("a"), release("b"))))])

    assert out.snapshots["second"][0] == 0
    assert out.called("cancel") == []
    assert [(job.command, job.status) for job in out.jobs] == [("a", 0), ("b", 0)]
    assert out.status == 130


def test_broadcast_status_and_kill_of_a_step_on_every_sub_node(tmp_path):
    out = run_loop(tmp_path, mode="b", nodes=TWO, queue=["a", "b"], scripts={"a": HANG},
                   actions=[when_started("a", pegasus("status --json", "status",
                                                      pegasus("kill 1", "kill")), nth=2)])

    doc = json.loads(out.snapshots["status"][1])
    assert doc["mode"] == "broadcast"
    assert sorted((j["id"], j["node"]) for j in doc["running"]) == [(1, "[node-1]"),
                                                                  (1, "[node-2]")]
    assert out.snapshots["kill"][0] == 0
    assert sorted(out.called("cancel")) == [("[node-1]", "a"), ("[node-2]", "a")]
    assert [(job.command, job.status) for job in out.jobs] == [
        ("a", 143), ("a", 143), ("b", 0), ("b", 0)]
    failed = (tmp_path / "failed.yaml").read_text()
    assert "for [node-1], [node-2]: killed by user, exit 143; killed by user, exit 143" \
        in failed
    assert out.status == 1


def test_log_of_a_running_job_that_printed_nothing_yet_is_empty_not_missing(tmp_path):
    out = run_app(tmp_path, queue=["a"], scripts={"a": HANG},
                  actions=[when_started("a", pegasus("log 1", "log", pegasus(
                      "log 2", "other", release("a"))))])

    assert out.snapshots["log"] == (0, "")  # it runs: its file comes with its first output
    status, text = out.snapshots["other"]
    assert status == 2 and "no log of job 2" in text
    assert not (tmp_path / "logs" / "1.log").exists()


def test_status_names_the_slots_each_running_job_holds(tmp_path):
    held = "train on {{slots}}"
    out = run_loop(tmp_path, nodes=[{"hostname": "g1", "slots": "4"}],
                   queue=[{"command": held, "slots": "2"}, {"command": held, "slots": "2"}],
                   scripts={"train on 0,1": HANG, "train on 2,3": HANG},
                   actions=[when_started("train on 2,3", pegasus(
                       "status --json", "json", pegasus("status", "words",
                                                        release("train on 0,1"),
                                                        release("train on 2,3"))))])

    jobs = sorted((j["node"], j["slots"], j["command"])
                  for j in json.loads(out.snapshots["json"][1])["running"])
    assert jobs == [("[g1 slots 0,1]", [0, 1], "train on 0,1"),
                    ("[g1 slots 2,3]", [2, 3], "train on 2,3")]
    words = out.snapshots["words"][1]
    assert "  #1 [g1 slots 0,1] 0:00 'train on 0,1'" in words
    assert "  #2 [g1 slots 2,3] 0:00 'train on 2,3'" in words


def test_status_with_its_output_closed_says_so_and_exits_74(tmp_path):
    (tmp_path / "queue.yaml").write_text("- echo hi\n")
    res = subprocess.run(["sh", "-c", 'exec "$0" -m pegasus status --json >&-', sys.executable],
                         cwd=tmp_path, stderr=subprocess.PIPE, text=True, timeout=60)
    assert res.returncode == 74, res.stderr
    assert res.stderr == "pegasus: standard output is closed\n"
    assert (tmp_path / "queue.yaml").read_text() == "- echo hi\n"


def test_status_says_a_daemon_is_stuck_at_a_bad_entry(tmp_path):
    out = run_app(tmp_path, queue=["a", {"command": "b {{nope}}"}], daemon=True, timeout=10,
                  actions=[when_printed("this entry stays in the queue",
                                        pegasus("status --json", "json",
                                                pegasus("status", "words", ctrl_c)))])

    doc = json.loads(out.snapshots["json"][1])
    assert "queue.yaml:1 (entry 1)" in doc["blocked"] and "nope" in doc["blocked"]
    text = out.snapshots["words"][1]
    assert "the queue is stuck at a bad entry, taking nothing until it is fixed: " in text
    assert "nope" in text


def test_status_dates_a_sub_node_added_to_hosts_yaml_from_when_it_came(tmp_path):
    out = run_app(tmp_path, queue=["a"], daemon=True, timeout=10, scripts={"a": HANG},
                  actions=[when_started("a", write_hosts(["node-1", "node-2"])),
                           when_printed("connected; taking jobs",
                                        pegasus("status --json", "json", release("a"),
                                                ctrl_c))])

    doc = json.loads(out.snapshots["json"][1])
    since = {node["name"]: node["since"] for node in doc["nodes"]}
    assert since["[node-1]"] == doc["started"]
    assert since["[node-2]"] > doc["started"]


def test_stop_with_one_job_running_says_it_finishes_first(tmp_path):
    out = run_loop(tmp_path, queue=["a", "b"], scripts={"a": HANG},
                   actions=[when_started("a", pegasus("stop", "stop", release("a")))])

    assert out.snapshots["stop"] == (0, f"Pegasus (pid {os.getpid()}): takes no more jobs; "
                                        "1 running job finishes first\n")
    assert out.queue == ["b"]


def test_kill_is_answered_while_someone_holds_the_queue_lock(tmp_path):
    """Lock mode holds the queue lock as long as its editor is open; a free
    sub-node's take waits for it. A ``pegasus kill`` meanwhile acts at once, and
    the killed job's end is reported then, not when the editor closes."""
    held = {}

    def hold_lock(fake):
        fd = os.open(os.path.join(fake.folder, ".queue.yaml.lock"), os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file: the loop's take must wait
        held["fd"] = fd

    def let_go(fake):  # once the kill's end is printed, or 10 s after its answer
        deadline = time.monotonic() + 10
        while "killed by user" not in fake.output() and time.monotonic() < deadline:
            gevent.sleep(0.01)
        held["ended while held"] = "killed by user" in fake.output()
        os.close(held["fd"])

    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b", "c"], scripts={"a": HANG},
                   actions=[when_started("b", hold_lock, pegasus("kill 1", "kill", let_go))])

    status, text = out.snapshots["kill"]
    assert status == 0, text
    assert held["ended while held"], out.output
    assert sorted(j.command for j in out.jobs) == ["a", "b", "c"]
    assert out.queue == [] and out.status == 1


def test_a_job_failing_while_someone_holds_the_queue_lock_is_recorded_and_nothing_crashes(
        tmp_path):
    """failed.yaml is written under the queue lock: its record waits for the lock,
    whatever else happens meanwhile (another job ends), and is never given up on
    (a take gives way to the loop's events; a record must not)."""
    held = {}

    def hold_lock(fake):
        fd = os.open(os.path.join(fake.folder, ".queue.yaml.lock"), os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held["fd"] = fd

    def let_go_once_b_ended(fake):
        """Once b's end waits on the loop's queue and a's record has waited for the
        lock since, let the lock go."""
        queue, waited = fake.loop.run.queue, []
        for name in ("_wait", "_pause"):  # the queue file's two ways to wait for the lock
            def counted(seconds, wait=getattr(queue, name)):
                waited.append(not fake.loop.events.empty())
                return wait(seconds)
            setattr(queue, name, counted)

        def watch():
            deadline = time.monotonic() + 10
            while not any(waited) and time.monotonic() < deadline:
                gevent.sleep(0.01)
            os.close(held["fd"])
        gevent.spawn(watch)

    out = run_loop(tmp_path, nodes=TWO, queue=["a", "b", "c"],
                   scripts={"a": FakeJob(hang=True, exit=3), "b": HANG},
                   actions=[when_started("b", hold_lock, release("a")),
                            when_printed("done (exit 3)", release("b"), let_go_once_b_ended)])

    assert "Traceback" not in out.output and out.status == 1, out.output
    failed = yaml.safe_load((tmp_path / "failed.yaml").read_text())
    assert [entry["command"] if isinstance(entry, dict) else entry for entry in failed] == ["a"]
    assert sorted(j.command for j in out.jobs) == ["a", "b", "c"]
    assert out.queue == [] and out.interrupted == []
