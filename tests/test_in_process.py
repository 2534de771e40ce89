"""``run_in_process`` (helpers.py) gives what the real command gives, and leaves
the test process as it found it.

Many CLI tests run Pegasus through ``cli.main`` in the test process; these
cases run both ways and compare exit status, stdout (its lines), stderr and the
files left.
"""
import os
import re
import signal
import subprocess

import gevent
import pytest

from pegasus import app

TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")  # consumed.yaml's
ROW_TIMES = re.compile(r"\t\d+\.\d{3}\t\d+\.\d{3}\t")  # joblog.tsv's start and runtime
LOCK_EDITOR = ("sh -c 'echo editor-out; echo editor-err >&2; "
               "printf -- \"- echo two\\n\" >> \"$0\"'")
# (id, hosts.yaml, queue.yaml, arguments). No templates: a real command that
# meets one spends 0.7 s of CPU loading pybars.
CASES = [
    ("queue", "- localhost\n",
     "- printf 'a\\r\\nb\\rc\\n'\n- echo err >&2\n- command: [echo 1, echo 2]\n"
     "- exit 3\n", ["q"]),
    ("bad-input", "- localhost\n", "- echo one\n- [unclosed\n", ["q"]),
    ("lock", "- localhost\n", "- echo one\n", ["l", "--editor", LOCK_EDITOR]),
]


def said_and_left(run, folder, hosts, queue, args):
    folder.mkdir(parents=True)
    (folder / "hosts.yaml").write_text(hosts)
    (folder / "queue.yaml").write_text(queue)
    res = run(args, folder, env={"NO_COLOR": "1"})
    files = {name: TIME.sub("<time>", (folder / name).read_text())
             for name in sorted(os.listdir(folder))
             if not name.startswith(".") and name != "logs"}
    if (folder / "logs").is_dir():  # job logs too; joblog.tsv's start and runtime vary
        files.update({"logs/" + name: ROW_TIMES.sub("\t<start>\t<runtime>\t",
                                                    (folder / "logs" / name).read_text())
                      for name in sorted(os.listdir(folder / "logs"))})
    # two sub-nodes' lines interleave as they come: compared in any order
    return res.returncode, sorted(res.stdout.splitlines(True)), res.stderr, files


@pytest.mark.parametrize("hosts, queue, args", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_the_same_as_the_real_command(tmp_path, run_pegasus, run_in_process, hosts, queue,
                                      args):
    real = said_and_left(run_pegasus, tmp_path / "real" / "run", hosts, queue, args)
    here = said_and_left(run_in_process, tmp_path / "here" / "run", hosts, queue, args)
    assert here == real


def test_the_process_is_left_as_it_was(tmp_path, run_in_process):
    def state():
        return (os.getcwd(), dict(os.environ), os.umask(os.umask(0o022)),
                {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM,
                                                        signal.SIGCHLD)})
    before = state()
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    (tmp_path / "queue.yaml").write_text("- echo $FOO; umask\n")
    res = run_in_process(["q"], tmp_path, env={"FOO": "bar", "HOME": None}, umask=0o027)
    assert "[localhost] bar\n[localhost] 0027\n" in res.stdout, res.stdout + res.stderr
    assert state() == before
    # gevent's SIGCHLD handler is gone: it would reap this child while the hub runs
    child = subprocess.Popen(["sh", "-c", "exit 3"])
    gevent.sleep(0.2)
    assert child.wait() == 3


def test_an_exception_is_a_traceback_and_exit_1(tmp_path, run_in_process, monkeypatch):
    monkeypatch.setattr(app, "run", lambda opts: 1 / 0)
    res = run_in_process(["q"], tmp_path)
    assert res.returncode == 1
    assert res.stderr.startswith("Traceback") and "ZeroDivisionError" in res.stderr


def test_a_run_past_its_timeout_raises_as_subprocess_does(tmp_path, run_in_process):
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    (tmp_path / "queue.yaml").write_text("- echo started; sleep 30\n")
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        run_in_process(["q"], tmp_path, timeout=0.5)
    assert "[localhost] started" in expired.value.output
