"""Helpers shared by the test files: polling, files, Pegasus's output and processes.

The test files import it as ``from helpers import ...`` (conftest.py puts this
folder on sys.path). Like conftest.py, it does not import the ``pegasus``
package.
"""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from cluster import Cluster, ClusterUnavailable

IN_CI = os.environ.get("CI", "").lower() == "true"
LABELED = re.compile(r"^(\[[^\]]*\]) (.*)$")
RUN_FRAME = re.compile(r"^=== run '(.*)' ===$")
DONE_FRAME = re.compile(r"^=== done \((.*)\) ===$")
# The test being run and whether it is marked sshd (conftest.py sets it).
_RUNNING = {"test": None, "sshd": True}


def wait_for(predicate, timeout=30.0, interval=0.05, what="condition"):
    """Poll ``predicate`` until it returns something true (returned), or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def read(path):
    """The text of a file, or "" while it does not exist."""
    try:
        with open(str(path)) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def write(path, text):
    """Write ``text`` to a file, replacing what it held."""
    with open(str(path), "w") as f:
        f.write(text)


def setup(folder, hosts, queue):
    """Write ``folder``'s hosts.yaml (text) and queue.yaml (one entry a command)."""
    write(os.path.join(str(folder), "hosts.yaml"), hosts)
    write(os.path.join(str(folder), "queue.yaml"), "".join("- %s\n" % q for q in queue))


def queue_entries(path):
    """The entries of a queue file, every scalar as typed; [] if missing or empty."""
    return yaml.load(read(path), Loader=yaml.BaseLoader) or []


def jobs_of(stdout):
    """Every job in the output: dicts label/command/lines/done, in start order."""
    jobs, current = [], {}
    for line in stdout.splitlines():
        m = LABELED.match(line)
        if not m:
            continue
        label, text = m.groups()
        run, done = RUN_FRAME.match(text), DONE_FRAME.match(text)
        if run:
            current[label] = {"label": label, "command": run.group(1), "lines": [],
                              "done": None}
            jobs.append(current[label])
        elif done and label in current:
            current.pop(label)["done"] = done.group(1)
        elif label in current:
            current[label]["lines"].append(text)
    return jobs


def kill_all(pids):
    """SIGKILL every process of ``pids``, passing over those already gone."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def running_test(nodeid, marked_sshd):
    """Record the test about to run: conftest.py calls it before each test's set-up."""
    _RUNNING.update(test=nodeid, sshd=marked_sshd)


def require_sshd_mark():
    """Fail the running test unless it is marked sshd, wherever it runs.

    An unmarked test that starts sshd would run in the fast tier
    (``-m "not sshd"``), which must need neither root nor sshd.
    """
    if not _RUNNING["sshd"]:
        pytest.fail("%s uses sshd but is not marked sshd: add @pytest.mark.sshd (or use "
                    "the cluster fixture, which marks its tests)" % _RUNNING["test"],
                    pytrace=False)


def cluster_or_skip():
    """For a test that starts sshd itself: it must be marked sshd, and sshd able to run."""
    require_sshd_mark()
    can_run_cluster_or_skip()


def can_run_cluster_or_skip():
    """Skip unless this machine can run the sshd test cluster (under CI=true: fail)."""
    try:
        Cluster.check_available()
    except ClusterUnavailable as e:
        if IN_CI:
            pytest.fail("CI=true but the SSH test cluster cannot run: %s" % e, pytrace=False)
        pytest.skip("SSH test cluster unavailable: %s" % e)


class Pegasus:
    """``python -m pegasus ARGS`` in its own session, output to files in ``folder``."""

    def __init__(self, folder, args):
        self.out_path = os.path.join(str(folder), "pegasus.out")
        self.err_path = os.path.join(str(folder), "pegasus.err")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pegasus", *[str(a) for a in args]],
                cwd=str(folder), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True)

    def out(self):
        return read(self.out_path)

    def said(self):
        return self.out() + read(self.err_path)

    def ctrl_c(self):
        """What a terminal does on Ctrl-c: SIGINT to the foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def saw(self, text):
        """A poll predicate: Pegasus printed ``text`` (an error if it exited first)."""
        def seen():
            if text in self.said():
                return True
            if self.proc.poll() is not None:
                raise AssertionError("Pegasus exited with %s before printing %r:\n%s"
                                     % (self.proc.returncode, text, self.said()))
            return False
        return seen

    def wait(self, timeout=60):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("Pegasus still runs after %ss:\n%s" % (timeout, self.said()))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


class Running:
    """``python -m pegasus ARGS`` in its own session; output collected as it arrives."""

    def __init__(self, args, cwd, env=None):
        full_env = dict(os.environ, **(env or {}))
        self.proc = subprocess.Popen([sys.executable, "-m", "pegasus", *map(str, args)],
                                     cwd=str(cwd), env=full_env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self):
        return "".join(self.lines)

    def signal_group(self, sig):
        os.killpg(self.proc.pid, sig)

    def interrupt(self):
        """SIGINT to the whole process group, as a terminal's Ctrl-c does."""
        self.signal_group(signal.SIGINT)

    def finish(self, timeout=60):
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout)
        return self.proc.returncode
