"""``pegasus status``, ``pegasus stop [--now]`` and ``pegasus kill ID...``: the
client side, run from any terminal of the user who runs Pegasus.

Each asks every Pegasus running on the queue through its control socket
(``control``; ``controlserver`` answers). ``status`` also counts the queue's
files itself, so it says something useful when no Pegasus runs.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Dict, List

from pegasus import control, progress
from pegasus.errors import ControlError, ExitStatus, InputError, StorageError
from pegasus.outlet import write_now
from pegasus.options import Options
from pegasus.queuefile import QueueFile
from pegasus.words import plural

_HEADER = re.compile(rb"^# (taken|failed|interrupted) ", re.M)  # records.py's comment lines


def run(opts: Options, out) -> ExitStatus:
    command = {"status": status, "stop": stop, "kill": kill}[opts.mode]
    return command(opts, lambda text: _write(out, text))


# ---------------------------------------------------------------- status

def status(opts: Options, say) -> ExitStatus:
    answers = [answer for _, answer in control.ask_all(opts.queue_file, {"request": "status"})]
    counts = queue_counts(opts.queue_file)
    if opts.json:
        say(json.dumps(document(opts.queue_file, answers, counts), indent=2))
    else:
        say(words(opts.queue_file, answers, counts, time.time()))
    return ExitStatus.OK if answers else ExitStatus.NOT_RUNNING


def queue_counts(queue_path: str) -> Dict:
    """Entries and jobs in the queue file; records in consumed, failed and
    interrupted.yaml. A queue file that does not parse: ``queue_error``."""
    queue = QueueFile(queue_path)
    counts: Dict = {"queued_entries": 0, "queued_jobs": 0}
    if os.path.exists(queue.path):
        try:
            counts["queued_entries"], counts["queued_jobs"] = queue.check_all(
                lambda job: None, lock=False)
        except InputError as err:
            counts.update(queued_entries=None, queued_jobs=None, queue_error=str(err))
    for name, path, what in (("done", queue.consumed_path, b"taken"),
                             ("failed", queue.failed_path, b"failed"),
                             ("interrupted", queue.interrupted_path, b"interrupted")):
        counts[name] = _records(path, what)
    return counts


def _records(path: str, what: bytes) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for m in _HEADER.finditer(f.read()) if m.group(1) == what)
    except FileNotFoundError:
        return 0
    except OSError as err:
        raise StorageError(f"{path}: cannot read it: {err.strerror}") from None


def document(queue_path: str, answers: List[Dict], counts: Dict) -> Dict:
    """``--json``: the first Pegasus's fields; every one's running jobs and sub-nodes."""
    first = answers[0] if answers else {}
    pids = [a["pid"] for a in answers]
    return {"pid": first.get("pid"), "pids": pids,
            "queue": first.get("queue") or os.path.realpath(queue_path),
            "started": first.get("started"), "mode": first.get("mode"),
            "daemon": first.get("daemon"), "state": first.get("state"),
            "blocked": first.get("blocked"),
            "running": [dict(job, pid=a["pid"]) for a in answers for job in a["running"]],
            "run": first.get("run"), "counts": counts,
            "nodes": [dict(node, pid=a["pid"]) for a in answers for node in a["nodes"]]}


def words(queue_path: str, answers: List[Dict], counts: Dict, now: float) -> str:
    lines = [] if answers else [f"no Pegasus runs on {os.path.realpath(queue_path)}"]
    for answer in answers:
        lines += _pegasus_words(answer, now)
    lines.append(_counts_words(counts))
    return "\n".join(lines)


def _pegasus_words(a: Dict, now: float) -> List[str]:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["started"]))
    run = a["run"]
    lines = [f"Pegasus (pid {a['pid']}) runs {a['queue']} in {a['mode']} mode"
             f"{' as a daemon' if a['daemon'] else ''} since {since} "
             f"({progress.clock(now - a['started'])}); {_state_words(a['state'])}",
             f"this run: {run['done']} done, {run['running']} running, "
             f"{run['failed']} failed"]
    if a.get("blocked"):
        lines.append(f"the queue is stuck at a bad entry, taking nothing until it is "
                     f"fixed: {a['blocked']}")
    jobs = a["running"]
    lines.append(f"running jobs ({len(jobs)}):" if jobs else "no job is running")
    for job in jobs:  # a label names the slots a job holds: [node-2 slots 0,1]
        lines.append(f"  #{job['id']} {job['node']} {progress.clock(job['elapsed'])} "
                     f"{job['command']!r}")
    lines.append(_nodes_words(a["nodes"]))
    return lines


def _state_words(state: str) -> str:
    return {"running": "taking jobs", "aborting": "taking no more jobs (aborting)",
            "stopping": "stopping: taking no more jobs, running jobs finish",
            "terminating": "stopping: running jobs are being stopped"}.get(state, state)


def _nodes_words(nodes: List[Dict]) -> str:
    up = sum(1 for n in nodes if n["state"] == "up")
    others = [f"{n['name']} {n['state']} since "
              f"{time.strftime('%H:%M:%S', time.localtime(n['since']))}"
              for n in nodes if n["state"] != "up"]
    return f"sub-nodes: {up} up" + ("; " + ", ".join(others) if others else "")


def _counts_words(c: Dict) -> str:
    queued = (f"unreadable ({c['queue_error']})" if c.get("queue_error") else
              f"{plural(c['queued_entries'], 'entry', 'entries')} "
              f"({plural(c['queued_jobs'], 'job')})")
    return (f"queue: {queued} queued; {c['done']} taken (consumed.yaml), {c['failed']} "
            f"failed (failed.yaml), {c['interrupted']} interrupted (interrupted.yaml)")


# ---------------------------------------------------------------- stop and kill

def stop(opts: Options, say) -> ExitStatus:
    answers = list(control.ask_all(opts.queue_file, {"request": "stop", "now": opts.now}))
    if not answers:
        raise ControlError(_none_runs(opts.queue_file, "stop"))
    for pid, answer in answers:
        running = answer.get("running", 0)
        say(f"Pegasus (pid {pid}): " + (
            f"stopping {plural(running, 'running job')} (TERM, then KILL 3 s later)"
            if opts.now and running else "takes no more jobs" +
            (f"; {plural(running, 'running job')} "
             f"{'finishes' if running == 1 else 'finish'} first" if running else "")))
    return ExitStatus.OK


def kill(opts: Options, say) -> ExitStatus:
    """Kill the jobs with these ids; none at all if one of them is not running."""
    runs = {pid: answer for pid, answer in control.ask_all(opts.queue_file,
                                                          {"request": "status"})}
    if not runs:
        raise ControlError(_none_runs(opts.queue_file, "kill"))
    owner = {job["id"]: pid for pid, a in runs.items() for job in a["running"]}
    missing = [i for i in opts.job_ids if i not in owner]
    if missing:
        raise InputError(_not_running(missing, sorted(owner)))
    late: List[int] = []
    for pid in sorted({owner[i] for i in opts.job_ids}):
        ids = [i for i in opts.job_ids if owner[i] == pid]
        answer = control.ask(control.socket_path(opts.queue_file, pid, control.folder()),
                             {"request": "kill", "ids": ids}) or {}
        if "error" in answer:
            raise ControlError(f"Pegasus (pid {pid}): {answer['error']}")
        if "killed" not in answer:
            late += ids
            continue
        say(f"Pegasus (pid {pid}): killing {_ids(ids)} (TERM to "
            f"{'its process group' if len(ids) == 1 else 'their process groups'}, then "
            "KILL 3 s later); reported as killed by user")
    if late:
        raise InputError(f"{_ids(late)} ended before it could be killed; nothing was done "
                         "to it")
    return ExitStatus.OK


def _ids(ids: List[int]) -> str:
    return ("job " if len(ids) == 1 else "jobs ") + ", ".join(f"#{i}" for i in ids)


def _not_running(missing: List[int], running: List[int]) -> str:
    verb = "is" if len(missing) == 1 else "are"
    now = (f"running now: {', '.join(f'#{i}' for i in running)}" if running
           else "no job is running now")
    return f"{_ids(missing)} {verb} not running ({now}); nothing was killed"


def _none_runs(queue_path: str, what: str) -> str:
    return (f"no Pegasus runs on {os.path.realpath(queue_path)}: nothing to {what} "
            "(give the queue file of the run with -Q)")


def _write(out, text: str) -> None:
    write_now(out, text.encode() + b"\n")
