"""Helpers shared by the test files: polling, files, Pegasus's output and processes.

The test files import it as ``from helpers import ...`` (conftest.py puts this
folder on sys.path). Like conftest.py, it does not import the ``pegasus``
package at import time (``run_in_process`` imports it when called).
"""
import contextlib
import io
import locale
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import pytest
import yaml

from cluster import Cluster, ClusterUnavailable

IN_CI = os.environ.get("CI", "").lower() == "true"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
# Hypothesis profile (conftest.py loads it): "ci", every property's full count
# of examples, under CI=true; "dev", a fifth of it, elsewhere. HYPOTHESIS_PROFILE=ci
# runs the full count anywhere.
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if IN_CI else "dev")
LABELED = re.compile(r"^(\[[^\]]*\]) (.*)$")
RUN_FRAME = re.compile(r"^=== run (?:#\d+ )?(?:\(attempt \d+\) )?'(.*)' ===$")
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


def examples(full):
    """A property's ``max_examples``: ``full`` under the "ci" profile, a fifth under "dev"."""
    return full if HYPOTHESIS_PROFILE == "ci" else max(10, full // 5)


def read(path):
    """The text of a file, or "" while it does not exist."""
    try:
        with open(str(path)) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def written_long_ago(path, age=3600):
    """Date the file ``age`` seconds back: at rest, as a queue file written before
    Pegasus started (one just written has an error reported only once it has not
    changed for ``atrest.QUIET`` seconds: a writer may be half-way through)."""
    st = os.stat(str(path))
    os.utime(str(path), ns=(st.st_atime_ns, st.st_mtime_ns - int(age * 1e9)))


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
        unavailable("the SSH test cluster", str(e))


def unavailable(what: str, why: str):
    """A test's fixture ``what`` cannot run here: skipped, but under CI=true failed
    (CI installs everything the tests need)."""
    if IN_CI:
        pytest.fail("CI=true but %s cannot run: %s" % (what, why), pytrace=False)
    pytest.skip("%s unavailable: %s" % (what, why))


def run_script(path, *args, timeout=900):
    """``python PATH ARGS`` from the repository's root, stdin empty, output kept."""
    return subprocess.run([sys.executable, str(path), *map(str, args)], cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


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


# ---------------------------------------------------------------- pegasus in this process

# What a run may change in the process and run_in_process puts back.
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD)


def run_in_process(args, cwd, timeout=60, env=None, input=None, umask=None, text=True):
    """``pegasus ARGS`` as ``run_pegasus`` runs it, but by ``pegasus.cli.main`` in
    this process: no interpreter start-up, no gevent and pybars loading per run.

    Same arguments and result as ``run_pegasus`` (a ``CompletedProcess``; with
    ``text`` its output decoded as ``subprocess.run(text=True)`` does), plus
    ``umask``. For the time of the run the process is the command's: file
    descriptors 0, 1 and 2 are /dev/null (or ``input``) and two files, which
    jobs and editors inherit, and ``sys.stdin``/``stdout``/``stderr`` are
    opened on them as Python opens them (not terminals: no colour, no
    question); cwd, ``os.environ`` (``env`` as for ``run_pegasus``) and the
    umask are the run's. Afterwards all of that, and the signal handlers the
    run installs (gevent's leave SIG_DFL behind, its SIGCHLD handler reaps
    every child), are put back. An exception that escapes ``main`` becomes a
    traceback on stderr and exit status 1, as Python does; ``timeout`` raises
    ``subprocess.TimeoutExpired`` (at the run's next wait: gevent's timeout).

    Not for a run that dies on purpose (``PEGASUS_FAULT``: ``os._exit``), that
    is signalled, or that runs while this test has other children whose exit
    status it reads (the run's SIGCHLD handler may reap them): those need
    ``run_pegasus``.
    """
    argv = [str(a) for a in args]
    with contextlib.ExitStack() as files:
        out, err = (files.enter_context(tempfile.TemporaryFile()) for _ in range(2))
        stdin = files.enter_context(open(os.devnull, "rb") if input is None
                                    else tempfile.TemporaryFile())
        if input is not None:
            stdin.write(input.encode(locale.getpreferredencoding(False))
                        if isinstance(input, str) else input)
            stdin.seek(0)
        with _as_the_process(cwd, env, umask, (stdin.fileno(), out.fileno(), err.fileno())):
            status = _main(argv, timeout)
        said = [_read_all(f) for f in (out, err)]
    if text:
        said = [_decoded(data) for data in said]
    if status is None:
        raise subprocess.TimeoutExpired(["pegasus", *argv], timeout, *said)
    return subprocess.CompletedProcess(["pegasus", *argv], status, *said)


def _main(argv, timeout):
    """``cli.run()``'s work: the exit status, or None after ``timeout`` seconds."""
    import gevent
    from pegasus import cli

    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        status = cli.main(argv)
    except gevent.Timeout as expired:
        if expired is not timer:
            raise
        return None
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 1
    except Exception:  # noqa: BLE001 - what Python prints before it exits 1
        sys.stderr.write(traceback.format_exc())
        status = 1
    finally:
        timer.close()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # as cli.run() does
            stream.flush()
    return int(status)


@contextlib.contextmanager
def _as_the_process(cwd, env, umask, fds):
    """The run's cwd, environment, umask, fds 0-2 and sys streams; then ours back."""
    import gevent

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_signals = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    saved_umask = os.umask(0)
    os.umask(saved_umask if umask is None else umask)
    try:
        for key, value in (env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = str(value)
        if os.environ.get("PEGASUS_FAULT"):
            raise ValueError("PEGASUS_FAULT ends the process (os._exit): use run_pegasus")
        os.chdir(str(cwd))
        with _std_fds(fds):
            yield
    finally:
        for sig, handler in saved_signals.items():
            if handler is not None:  # None: not set from Python, nothing to put back
                signal.signal(sig, handler)
        gevent.get_hub().loop.reset_sigchld()  # the next gevent child installs it again
        os.umask(saved_umask)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


@contextlib.contextmanager
def _std_fds(fds):
    """fds 0, 1, 2 made copies of ``fds``, sys.stdin/stdout/stderr opened on them."""
    saved_streams = (sys.stdin, sys.stdout, sys.stderr)
    for stream in saved_streams[1:]:
        stream.flush()
    saved_fds = [os.dup(fd) for fd in (0, 1, 2)]
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        streams = _std_streams()
        sys.stdin, sys.stdout, sys.stderr = streams
        try:
            yield
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved_streams
            for stream in streams:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
    finally:
        for target, fd in enumerate(saved_fds):
            os.dup2(fd, target)
            os.close(fd)


def _std_streams():
    """sys.stdin, stdout and stderr on fds 0-2, as Python opens them for a pipe."""
    like = [sys.__stdin__, sys.__stdout__, sys.__stderr__]
    streams = []
    for fd, original in enumerate(like):
        raw = io.FileIO(os.dup(fd), "r" if fd == 0 else "w")
        buffered = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        streams.append(io.TextIOWrapper(
            buffered, encoding=getattr(original, "encoding", None) or "utf-8",
            errors=getattr(original, "errors", None) or "strict",
            line_buffering=fd == 2))  # stderr is line-buffered since Python 3.9
    return streams


def _read_all(f):
    f.seek(0)
    return f.read()


def _decoded(data):
    """As ``subprocess.run(text=True)`` decodes a child's output."""
    text = data.decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")
