"""Scripted hosts, and the one place that knows how to build and drive a loop.

A test describes a run: the sub-nodes (hosts.yaml entries), the queue, a
script per job (``FakeJob``, matched by rendered command), how each host
answers connection attempts (``Answer``), and actions at points of the run
(``when_started("a", ctrl_c)``). ``run_loop`` runs the real queue or
broadcast loop on a real queue file and journal in ``tmp_path`` and returns
an ``Outcome``: what a user would look at afterwards (exit status, output,
queue.yaml, consumed.yaml, interrupted.yaml) plus which commands each
sub-node ran, in order, on a logical clock. ``run_app`` does the same
through ``cli.main`` (hosts.yaml, start-up checks, connecting).

Nothing else in the tests constructs ``modes.Run`` or a loop, or knows how
Ctrl-c and SIGTERM reach it: when the loop changes, only this file does.
No real signal is sent and no fixed sleep waits for anything: the run is
driven by the actions, and the timers of the loop and the connector are
shortened while a run lasts (``_FAST``).
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import itertools
import os
import re
import signal
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import gevent
import yaml
from gevent.event import AsyncResult

from helpers import queue_entries, read
from pegasus import (app, atrest, broadcast, cli, connecting, ctlcmd, executor, expand, halt,
                     hook, hostswatch, logcmd, modes, output, probing, records, running)
from pegasus.errors import (HostAuthError, HostConfigError, HostError, HostKeyError,
                            InputError, PegasusError)
from pegasus.events import HostSilent, Signal
from pegasus.executor import ConnectionLost, NotStarted
from pegasus.outlet import Outlet
from pegasus.output import Sink
from pegasus.queuefile import QueueFile

_RECORD = re.compile(r"^# (\w+) \S+ \S+(?: #\d+)? for (\[[^\]]*\]|[^:\n]*)(?:: (.*))?$", re.M)
_RECORD_ID = re.compile(r"^# \w+ \S+ \S+ #(\d+) for ", re.M)  # the job id of a record
RUN_TIMEOUT = 30.0  # a run still going after this is a hung loop (generous: a loaded CI)

# Loop and connector timers while a run lasts (seconds).
_FAST = ((modes, "POLL_SECONDS", 0.005), (executor, "HEARTBEAT", 0.005),
         (running, "KILL_AFTER", 0.01), (running, "GIVE_UP_AFTER", 0.02),
         (connecting, "RETRY_FIRST", 0.001), (connecting, "RETRY_MAX", 0.004),
         (probing, "FRESH", 1.0), (probing, "REFRESH", 0.5), (probing, "RECHECK", 0.005),
         (probing, "PROBE_TIMEOUT", 0.05), (probing, "GIVE_UP", 0.05),
         (hook, "HOOK_TIMEOUT", 0.05), (hostswatch, "POLL", 0.005))


# ---------------------------------------------------------------- scripts

@dataclass(frozen=True)
class FakeJob:
    """What one run of a command does on a fake host. Default: exit 0 at once.

    ``hang``: runs until ``release``d (then exits as scripted), cancelled
    (143) or killed (137); ``term_deaf``: cancel() does not stop it;
    ``heartbeats``: ends after hearing that many; ``lost_after``: the
    connection dies after that many seconds; ``not_started``: the command
    cannot be sent (before ``launching()``).
    """

    chunks: Tuple[Tuple[str, bytes], ...] = ()
    duration: float = 0.0
    exit: int = 0
    signal: Optional[int] = None
    lost_after: Optional[float] = None
    hang: bool = False
    term_deaf: bool = False
    heartbeats: int = 0
    not_started: bool = False

    @property
    def status(self) -> int:
        return 128 + self.signal if self.signal else self.exit


class Answer(Enum):
    """How a host answers one connection attempt."""

    OK = "ok"
    DOWN = "no answer"
    KEY_CHANGED = "host key changed"
    LOGIN_REFUSED = "login refused"
    CONFIG = "ProxyCommand is set in ssh_config"


# ---------------------------------------------------------------- points and actions

class Point(Enum):
    STARTED = "a job started"
    FINISHED = "a job finished"
    PRINTED = "Pegasus printed"
    QUEUE_EMPTY = "a take found the queue empty"
    PENDING = "a take found the last entry not known whole yet"
    BAD_ENTRY = "a take stopped at a bad entry"


@dataclass(frozen=True)
class Trigger:
    point: Point
    key: str  # the command, the printed text, or "" for the queue points
    actions: Tuple[Callable, ...]
    nth: int = 1  # fire at the nth time the point is reached


def when_started(command: str, *actions, nth: int = 1) -> Trigger:
    """Just after ``command`` was launched on some sub-node."""
    return Trigger(Point.STARTED, command, actions, nth)


def when_finished(command: str, *actions, nth: int = 1) -> Trigger:
    """When ``command`` ends on some sub-node, before the loop hears of it."""
    return Trigger(Point.FINISHED, command, actions, nth)


def when_printed(text: str, *actions, nth: int = 1) -> Trigger:
    """When Pegasus prints something containing ``text``."""
    return Trigger(Point.PRINTED, text, actions, nth)


def when_queue_empty(*actions, nth: int = 1) -> Trigger:
    """When a take finds fewer entries than it had sub-nodes for.

    The queue points come just after the take released the queue lock,
    before the loop looks at the file again: wrap an action in ``deferred``
    to act once the loop waits instead.
    """
    return Trigger(Point.QUEUE_EMPTY, "", actions, nth)


def when_pending(*actions, nth: int = 1) -> Trigger:
    """When a take leaves the file's last entry, not known whole yet (see atrest)."""
    return Trigger(Point.PENDING, "", actions, nth)


def when_bad_entry(*actions, nth: int = 1) -> Trigger:
    """When a take stops at a bad entry."""
    return Trigger(Point.BAD_ENTRY, "", actions, nth)


def ctrl_c(fake: "FakeRun") -> None:
    """What Pegasus gets from the terminal's Ctrl-c."""
    fake.loop.signalled(Signal.CTRL_C)


def sigterm(fake: "FakeRun") -> None:
    """What Pegasus gets from ``kill PID``."""
    fake.loop.signalled(Signal.SIGTERM)


def pegasus(args: str, name: str, *then) -> Callable:
    """``pegasus ARGS [-Q <the run's queue>]`` (status, stop, kill, log) from another
    terminal: the real client, in a thread, against the run's real control
    socket. Its (exit status, output) goes to ``snapshots[name]``; then the
    actions ``then`` run."""
    def act(fake: "FakeRun") -> None:
        def ask():
            argv = args.split() + ([] if "-Q" in args.split() else ["-Q", fake.queue_path])
            fake.snapshots[name] = gevent.get_hub().threadpool.apply(control_client, (argv,))
            for action in then:
                action(fake)
        fake.asking.append(gevent.spawn(ask))
    return act


def control_client(argv: Sequence[str]) -> Tuple[int, str]:
    """``pegasus status|stop|kill|log ...`` as cli.main runs it: (exit status, output)."""
    out = io.BytesIO()
    try:
        opts = cli.parse_args(list(argv))
        status = int((logcmd if opts.mode == "log" else ctlcmd).run(opts, out))
    except PegasusError as err:
        return int(err.exit_status), out.getvalue().decode() + f"pegasus: {err}\n"
    return status, out.getvalue().decode()


def stops_answering(host: str, seconds: float = 30.0) -> Callable:
    """What the hosts' watch reports of a host silent that long (keepalives unanswered)."""
    def act(fake: "FakeRun") -> None:
        fake.loop.hosts.post(HostSilent(host, seconds))
    return act


def append(text: str) -> Callable:
    """Append ``text`` to queue.yaml, as ``echo >> queue.yaml`` does."""
    def act(fake: "FakeRun") -> None:
        with open(fake.queue_path, "a") as f:
            f.write(text)
    return act


def backdate(seconds: float = 7200) -> Callable:
    """Date queue.yaml's last write ``seconds`` ago: its writer is long done."""
    def act(fake: "FakeRun") -> None:
        st = os.stat(fake.queue_path)
        os.utime(fake.queue_path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))
    return act


def rewrite(entries: Sequence) -> Callable:
    """Replace queue.yaml by ``entries``, as an editor saving it does."""
    def act(fake: "FakeRun") -> None:
        partial = fake.queue_path + ".edit"
        with open(partial, "w") as f:
            f.write(_yaml(entries))
        os.replace(partial, fake.queue_path)
    return act


def write_hosts(entries, backdated: bool = False) -> Callable:
    """Replace hosts.yaml (``run_app``) by ``entries`` (or this text), as an editor
    saving it does; ``backdated``: its last write two hours ago (at rest at once)."""
    def act(fake: "FakeRun") -> None:
        path = os.path.join(fake.folder, "hosts.yaml")
        with open(path + ".edit", "w") as f:
            f.write(entries if isinstance(entries, str) else _yaml(entries))
        os.replace(path + ".edit", path)
        if backdated:
            st = os.stat(path)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 7200 * 10**9))
    return act


def rescript(key, script) -> Callable:
    """From now on, ``key`` (as in ``run_loop``'s ``scripts``) runs as ``script``."""
    def act(fake: "FakeRun") -> None:
        fake.scripts[key] = script
    return act


def release(command: str) -> Callable:
    """A hanging ``command`` ends now, with its scripted status."""
    def act(fake: "FakeRun") -> None:
        for executor_ in fake.executors:
            if executor_.running == command:
                executor_.end(executor_.script.status)
    return act


def stall_output(fake: "FakeRun") -> None:
    """The reader of Pegasus's stdout stops reading (``| less`` left alone)."""
    fake.screen.flowing.clear()


def resume_output_after(seconds: float) -> Callable:
    """The reader reads again, ``seconds`` from now (timers due before then run
    first: gevent runs them in order)."""
    def act(fake: "FakeRun") -> None:
        gevent.spawn_later(seconds, fake.screen.flowing.set)
    return act


def hold_queue_lock(fake: "FakeRun") -> None:
    """Someone else takes the queue lock (lock mode's editor opens), until
    ``free_queue_lock``."""
    fd = os.open(QueueFile(fake.queue_path).lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)
    fake.held_locks.append(fd)


def free_queue_lock(fake: "FakeRun") -> None:
    os.close(fake.held_locks.pop())


def deferred(*actions) -> Callable:
    """Do ``actions`` as soon as the loop next waits (yields to other greenlets)."""
    def act(fake: "FakeRun") -> None:
        gevent.spawn(lambda: [action(fake) for action in actions])
    return act


def snapshot(name: str) -> Callable:
    """Keep queue.yaml's entries as they are now: ``outcome.snapshots[name]``."""
    def act(fake: "FakeRun") -> None:
        fake.snapshots[name] = queue_entries(fake.queue_path)
    return act


# ---------------------------------------------------------------- what came out

@dataclass
class Ran:
    """One command launched on one sub-node; ``status`` None: connection lost."""

    node: str
    command: str
    start: int  # ticks of a logical clock shared by all starts and ends
    end: Optional[int] = None
    status: Optional[int] = None


@dataclass
class Outcome:
    status: int
    output: str
    queue: list
    consumed: list
    consumed_text: str
    interrupted: list
    interrupted_text: str
    jobs: List[Ran]  # in start order
    calls: List[Tuple[str, str, str]]  # (sub-node label, method, command or "")
    connects: List[Tuple[str, Answer]]  # (host, answer), in order
    snapshots: Dict[str, list]
    takes: int = 0  # how many times the loop took from (or looked at) the queue

    @property
    def messages(self) -> List[str]:
        """Pegasus's own lines, without the ``pegasus: `` tag."""
        return [line[len("pegasus: "):] for line in self.output.splitlines()
                if line.startswith("pegasus: ")]

    @property
    def taken_for(self) -> List[str]:
        """What each ``# taken ... for X`` record of consumed.yaml names: a
        sub-node (``[node-1]``), or ``broadcast to 3 sub-nodes``."""
        return [m.group(2) for m in _RECORD.finditer(self.consumed_text)]

    @property
    def taken_ids(self) -> List[int]:
        """The job id of each ``# taken <time> #17 for X`` record of consumed.yaml."""
        return [int(m.group(1)) for m in _RECORD_ID.finditer(self.consumed_text)]

    @property
    def interrupted_ids(self) -> List[int]:
        """The job id of each record of interrupted.yaml."""
        return [int(m.group(1)) for m in _RECORD_ID.finditer(self.interrupted_text)]

    @property
    def interrupted_for(self) -> List[Tuple[str, str]]:
        """(sub-node, reason) of each record of interrupted.yaml."""
        return [(m.group(2), m.group(3)) for m in _RECORD.finditer(self.interrupted_text)]

    def ran(self, node: str) -> List[str]:
        """The commands ``node`` (a label, ``[node-1]``) launched, in order."""
        return [job.command for job in self.jobs if job.node == node]

    def runs_of(self, command: str) -> List[Ran]:
        return [job for job in self.jobs if job.command == command]

    def lines(self, node: str) -> List[str]:
        """What was printed under ``node``'s label, frames included."""
        prefix = node + " "
        return [line[len(prefix):] for line in self.output.splitlines()
                if line.startswith(prefix)]

    def called(self, method: str) -> List[Tuple[str, str]]:
        """(sub-node, command) of every executor call of ``method``."""
        return [(node, command) for node, name, command in self.calls if name == method]


# ---------------------------------------------------------------- the fakes

class FakeExecutor:
    """The executor interface (run, heartbeat, cancel, kill, close), scripted."""

    def __init__(self, node, fake: "FakeRun"):
        self.node, self.fake = node, fake
        self.running: Optional[str] = None  # the command, while one runs
        self.script = FakeJob()
        self.ending: Optional[AsyncResult] = None
        self.heard = 0
        self.dead = False  # its connection was lost

    def run(self, command: str, emit, launching=lambda: None, placed=None) -> int:
        self.fake.call(self.node, "run", command)
        script = self.fake.script(self.node, command)
        if self.dead or script.not_started:
            raise NotStarted("fake: the command could not be sent")
        launching()
        self.running, self.script, self.heard = command, script, 0
        self.ending = AsyncResult()
        self.fake.started(self.node, command)
        status = None
        try:
            for stream, data in script.chunks:
                emit(stream, data)
            status = self._wait(script)
        finally:
            self.running = self.ending = None
            self.fake.finished(self.node, command, status)
        return status

    def _wait(self, script: FakeJob) -> int:
        limit = script.lost_after
        if limit is None and not (script.hang or script.heartbeats):
            limit = script.duration
        try:
            return self.ending.get(timeout=limit)
        except gevent.Timeout:
            if script.lost_after is None:
                return script.status
        self.dead = True
        raise ConnectionLost("fake: connection reset by peer")

    def end(self, status: int) -> None:
        if self.ending is not None and not self.ending.ready():
            self.ending.set(status)

    def heartbeat(self) -> None:
        self.fake.call(self.node, "heartbeat", self.running or "")
        if self.dead:
            raise ConnectionLost("fake: connection reset by peer")
        self.heard += 1
        if self.script.heartbeats and self.heard >= self.script.heartbeats:
            self.end(self.script.status)

    def cancel(self) -> None:
        self.fake.call(self.node, "cancel", self.running or "")
        if not self.script.term_deaf:
            self.end(128 + signal.SIGTERM)

    def kill(self) -> None:
        self.fake.call(self.node, "kill", self.running or "")
        self.end(128 + signal.SIGKILL)

    def run_aside(self, command: str):
        """A cancel hook, scripted like a job (``hang``: until the hook's bound)."""
        self.fake.call(self.node, "aside", command)
        script = self.fake.script(self.node, command)
        if script.hang:
            gevent.sleep(RUN_TIMEOUT)
        if script.lost_after is not None:
            raise ConnectionLost("fake: connection reset by peer")
        return script.status, b"".join(data for _, data in script.chunks)

    def silent_for(self) -> Optional[float]:
        return None  # never "not responding"

    def close(self) -> None:
        self.fake.call(self.node, "close", "")


class FakeConnector(connecting.Connector):
    """The real connect_all and reconnect; connect() answers as scripted."""

    def __init__(self, fake: "FakeRun"):  # no hosts given: no ssh -G, nothing to resolve
        super().__init__([], None)
        self.fake = fake

    def connect(self, node):
        answer = self.fake.answer(node.hostname)
        if answer is Answer.OK:
            executor = FakeExecutor(node, self.fake)
            self.fake.executors.append(executor)
            return executor
        error = {Answer.DOWN: HostError, Answer.KEY_CHANGED: HostKeyError,
                 Answer.LOGIN_REFUSED: HostAuthError, Answer.CONFIG: HostConfigError}[answer]
        raise error(node.hostname, f"fake: {answer.value}")


def _watch_takes(job_records, fake: "FakeRun"):
    """The real records; the fake run hears when a take finds the queue empty or bad."""
    take = job_records.take_placed

    def watched(*args, **kwargs):
        fake.takes += 1
        try:
            taken = take(*args, **kwargs)
        except InputError:
            fake.reached(Point.BAD_ENTRY)
            raise
        if taken.error is not None:
            fake.reached(Point.BAD_ENTRY)
        elif taken.pending:
            fake.reached(Point.PENDING)
        elif taken.emptied:
            fake.reached(Point.QUEUE_EMPTY)
        return taken
    job_records.take_placed = watched
    return job_records


class _WatchedOutlet(Outlet):
    """Pegasus's stdout: the fake run hears what is printed, in the writing greenlet."""

    def __init__(self, fake: "FakeRun", stream, *args, **kwargs):
        super().__init__(stream, *args, **kwargs)
        self.fake = fake

    def write(self, data: bytes, wait: bool = False) -> None:
        super().write(data, wait)
        self.fake.printed(bytes(data).decode("utf-8", "replace"))


class _Screen(io.BytesIO):
    """Pegasus's stdout, kept (an outlet thread may write it); ``flowing`` cleared:
    a reader that stopped reading (writes wait, in the outlet's thread)."""

    def __init__(self):
        super().__init__()
        self.flowing = threading.Event()
        self.flowing.set()

    def write(self, data) -> int:
        self.flowing.wait(RUN_TIMEOUT)
        return super().write(data)

    def isatty(self) -> bool:
        return False


# ---------------------------------------------------------------- a run

class FakeRun:
    """The world of one run: scripts, hosts, points reached, what happened."""

    def __init__(self, tmp_path, queue, scripts, hosts, actions, timeout=RUN_TIMEOUT,
                 quiet=0.0):
        self.folder, self.timeout, self.quiet = str(tmp_path), timeout, quiet
        self.queue_path = os.path.join(self.folder, "queue.yaml")
        with open(self.queue_path, "w") as f:
            f.write(queue if isinstance(queue, str) else _yaml(queue))
        self.scripts = {key: list(value) if isinstance(value, list) else value
                        for key, value in (scripts or {}).items()}
        self.answers = {host: list(answers) for host, answers in (hosts or {}).items()}
        self.triggers = list(actions)
        self.counts: Dict[Tuple[str, str, int], int] = {}
        self.clock = itertools.count(1)
        self.jobs: List[Ran] = []
        self.calls: List[Tuple[str, str, str]] = []
        self.connects: List[Tuple[str, Answer]] = []
        self.snapshots: Dict[str, list] = {}
        self.takes = 0
        self.executors: List[FakeExecutor] = []
        self.screen = _Screen()
        self.held_locks: List[int] = []  # hold_queue_lock's
        self.loop = None
        self.asking: List[gevent.Greenlet] = []  # ``pegasus`` actions: answered by the end

    # -- what the fakes ask and tell

    def script(self, node, command: str) -> FakeJob:
        for key in ((node.label, command), (node.hostname, command), command):
            if key in self.scripts:
                return _next(self.scripts, key)
        return FakeJob()

    def answer(self, host: str) -> Answer:
        answer = _next(self.answers, host) if host in self.answers else Answer.OK
        self.connects.append((host, answer))
        return answer

    def call(self, node, method: str, command: str) -> None:
        self.calls.append((node.label, method, command))

    def started(self, node, command: str) -> None:
        self.jobs.append(Ran(node.label, command, next(self.clock)))
        self.reached(Point.STARTED, command)

    def finished(self, node, command: str, status: Optional[int]) -> None:
        job = next(j for j in reversed(self.jobs)  # lanes of a host share a label
                   if j.node == node.label and j.command == command and j.end is None)
        job.end, job.status = next(self.clock), status
        self.reached(Point.FINISHED, command)

    def printed(self, text: str) -> None:
        for trigger in self.triggers:
            if trigger.point is Point.PRINTED and trigger.key in text:
                self._count(trigger)

    def reached(self, point: Point, key: str = "") -> None:
        for trigger in self.triggers:
            if trigger.point is point and trigger.key == key:
                self._count(trigger)

    def _count(self, trigger: Trigger) -> None:
        seen = self.counts[id(trigger)] = self.counts.get(id(trigger), 0) + 1
        if seen == trigger.nth:
            for action in trigger.actions:
                action(self)

    # -- running

    def run_loop(self, mode: str, nodes, daemon: bool, error_aborts: bool,
                 timeout: Optional[float] = None, halt_policy: Optional[str] = None) -> int:
        stop = running.StopFlag()
        queue = QueueFile(self.queue_path, wait=stop.wait, pause=gevent.sleep)
        job_records, _, _ = records.open_run(queue, mode == "b")
        try:
            subnodes = expand.expand_hosts(list(nodes))
            connector = FakeConnector(self)
            executors, failed, connecting = connector.connect_all(subnodes)
            with self._watched_output():
                sink = Sink(self.screen, color=False, width=None)
            run = running.Run(subnodes, executors, connecting, failed, connector, queue,
                              _watch_takes(job_records, self), sink, stop,
                              expand.checker(subnodes), daemon, error_aborts,
                              timeout=timeout, halt=halt.parse(halt_policy or "never"),
                              rerun=f"pegasus {mode}")
            self.loop = (broadcast.BroadcastLoop if mode == "b" else modes.QueueLoop)(run)
            return self._bounded(self.loop.loop)
        finally:
            job_records.close()

    def _watched_output(self):
        return _patched(((output, "Outlet",
                          lambda stream, *args, **kwargs: _WatchedOutlet(self, stream, *args,
                                                                         **kwargs)),))

    def run_app(self, mode: str, nodes, daemon: bool, error_aborts: bool,
                options: Sequence[str] = ()) -> int:
        hosts_path = os.path.join(self.folder, "hosts.yaml")
        with open(hosts_path, "w") as f:
            f.write(_yaml(list(nodes)))
        argv = [mode, "-Q", self.queue_path, "-H", hosts_path]
        argv += ["--daemon"] * daemon + ["--error-aborts"] * error_aborts + list(options)
        stdout = io.TextIOWrapper(self.screen, write_through=True)
        original_loop = modes.Loop.loop

        def loop(this):
            self.loop = this
            return original_loop(this)
        original_open_run = records.open_run

        def open_run(*args):
            job_records, *rest = original_open_run(*args)
            return (_watch_takes(job_records, self), *rest)
        with _patched(((app, "Connector", lambda *args: FakeConnector(self)),
                       (records, "open_run", open_run),
                       (modes.Loop, "loop", loop))), self._watched_output(), \
                contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stdout):
            try:
                return self._bounded(lambda: cli.main(argv))
            finally:
                stdout.detach()  # closing it would close the screen

    def _bounded(self, body) -> int:
        timer = gevent.Timeout(self.timeout)
        try:
            with _patched(_FAST + ((atrest, "QUIET", self.quiet),)), _signal_handlers_kept():
                timer.start()
                return int(body())
        except gevent.Timeout as err:
            if err is not timer:
                raise
            raise AssertionError(f"the run still goes after {self.timeout}s; output so "
                                 f"far:\n{self.output()}") from None
        finally:
            timer.close()

    def output(self) -> str:
        return self.screen.getvalue().decode("utf-8", "replace")

    def outcome(self, status: int) -> Outcome:
        gevent.joinall(self.asking, timeout=RUN_TIMEOUT)
        consumed = read(os.path.join(self.folder, "consumed.yaml"))
        interrupted = read(os.path.join(self.folder, "interrupted.yaml"))
        return Outcome(status, self.output(), _queue_now(self.queue_path),
                       _entries(consumed), consumed, _entries(interrupted), interrupted,
                       sorted(self.jobs, key=lambda j: j.start), self.calls,
                       self.connects, self.snapshots, self.takes)


def run_loop(tmp_path, mode: str = "q", nodes: Sequence = ("node-1",), queue=(),
             scripts: Optional[dict] = None, hosts: Optional[dict] = None,
             daemon: bool = False, error_aborts: bool = False,
             actions: Sequence[Trigger] = (), timeout: float = RUN_TIMEOUT,
             quiet: float = 0.0, job_timeout: Optional[float] = None,
             halt_policy: Optional[str] = None) -> Outcome:
    """Run the queue ("q") or broadcast ("b") loop on fakes; what came out.

    ``nodes``: hosts.yaml entries. ``queue``: queue.yaml's entries (or its
    text). ``scripts``: {command or (sub-node label or host, command):
    FakeJob or [FakeJob, ...] (one per run, the last repeats)}.
    ``hosts``: {host: [Answer, ...]}, one per connection attempt (one per
    sub-node), the last repeats; default every attempt OK. ``quiet``: how long
    a queue file must rest before its last entry is taken (``atrest.QUIET``;
    0 by default: a file just written counts as written long ago).
    ``job_timeout``: seconds, as ``--timeout`` gives them; ``halt_policy``:
    ``--halt``'s text.
    """
    fake = FakeRun(tmp_path, queue, scripts, hosts, actions, timeout, quiet)
    return fake.outcome(fake.run_loop(mode, nodes, daemon, error_aborts, job_timeout,
                                      halt_policy))


def run_app(tmp_path, mode: str = "q", nodes: Sequence = ("node-1",), queue=(),
            scripts: Optional[dict] = None, hosts: Optional[dict] = None,
            daemon: bool = False, error_aborts: bool = False,
            actions: Sequence[Trigger] = (), timeout: float = RUN_TIMEOUT,
            options: Sequence[str] = (), quiet: float = 0.0) -> Outcome:
    """``pegasus MODE`` through ``cli.main``, with hosts.yaml written and the
    same fakes for connections and jobs; output is stdout and stderr.
    ``options``: more command-line options (``["--timeout", "1"]``); ``quiet``: as
    ``run_loop``'s (it applies to hosts.yaml too)."""
    fake = FakeRun(tmp_path, queue, scripts, hosts, actions, timeout, quiet)
    return fake.outcome(fake.run_app(mode, nodes, daemon, error_aborts, options))


# ---------------------------------------------------------------- helpers

def _next(table: dict, key):
    """A scripted value: the next of a list (the last one repeats), or the value."""
    value = table[key]
    if not isinstance(value, list):
        return value
    if len(value) > 1:
        return value.pop(0)
    return value[0]


def _yaml(entries: Sequence) -> str:
    return yaml.safe_dump(list(entries), default_flow_style=False, sort_keys=False) \
        if entries else ""


def _queue_now(path: str):
    """The queue's entries, or its text when it is not YAML (a syntax error left in it)."""
    try:
        return queue_entries(path)
    except yaml.YAMLError:
        return read(path)


def _entries(text: str) -> list:
    return yaml.load(text, Loader=yaml.BaseLoader) or []


@contextlib.contextmanager
def _patched(settings):
    """Set (owner, name, value) attributes for a while, then put them back."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in settings]
    try:
        for owner, name, value in settings:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


@contextlib.contextmanager
def _signal_handlers_kept():
    """The loop's gevent handlers leave SIG_DFL behind: pytest's Ctrl-c would kill."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
