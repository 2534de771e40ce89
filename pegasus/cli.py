"""Pegasus: run a list of shell commands on a set of SSH nodes.

Usage:
  pegasus (q | b) [options] [--limit=PATTERN...] [--exclude=PATTERN...]
  pegasus l [options]
  pegasus requeue [options]
  pegasus log [-f] ID [options]
  pegasus status [--json] [options]
  pegasus stop [--now] [options]
  pegasus kill ID... [options]
  pegasus (-h | --help)
  pegasus --version

Modes:
  q        Queue mode: run each command once, on the next free sub-node.
  b        Broadcast mode: run each command on every sub-node, in lock-step.
  l        Lock mode: lock the queue file and edit it while Pegasus runs.
  requeue  Move the jobs in interrupted.yaml (outcome unknown after a crash
           or a lost connection) back to the head of the queue; those in
           failed.yaml (failed, killed or timed out) with --failed.
  log      Print a job's log (-f: follow it until the job ends).
  status   Show what the Pegasus running on the queue runs, its sub-nodes,
           and the queue's counts (also when none runs).
  stop     As Ctrl-c in the running Pegasus's terminal: take no more jobs,
           let running jobs finish; --now: as a second Ctrl-c, stop them.
  kill     Stop these running jobs only (TERM, then KILL 3 s later); they
           are reported killed by user and the queue goes on.

Options:
  -d --daemon                 Queue and broadcast modes: keep running when the
                              queue is empty and run entries added to it later.
  --dry-run                   Queue and broadcast modes: check both files and
                              print each job as it would run and where, then
                              the totals; connect to nothing, run nothing,
                              change no file. requeue: show the jobs that
                              would move; change nothing.
  -n N                        With --dry-run: print at most N jobs.
  -e --error-aborts           Broadcast mode: stop after a step in which any
                              sub-node failed or was lost.
  -i --ignore-errors          Broadcast mode: go on after a failed step (the
                              default; the original Pegasus v1.4's flag).
                              Not with -e.
  --fold                      Broadcast mode: print each step's output once
                              per distinct output, under the sub-nodes that
                              printed it (node-[1-10] (10): exit 0), after
                              the step. Queue mode: the summary groups the
                              failed jobs by their error.
  --limit=PATTERN             Queue and broadcast modes: use only the hosts
                              this matches (repeatable): a glob (node-*), a
                              node range (node-[1-10,15], node[01-10]), or
                              @FILE, a file of host names (@failed-hosts.txt).
  --exclude=PATTERN           Queue and broadcast modes: leave out the hosts
                              this matches (repeatable; as --limit).
  --skip-unreachable          Broadcast mode: start with the hosts that can be
                              reached, skip the others (exit status 1).
  --editor=EDITOR             Lock mode: the editor to open (default: $EDITOR,
                              else vim).
  --timeout=DURATION          Queue and broadcast modes: stop a job that runs
                              longer (TERM, then KILL 3 s later) and report
                              it as timed out (exit status 124). A queue
                              entry's own 'timeout:' wins. Seconds (90), or
                              with a unit: 90s, 30m, 2h, 1d.
  --retries=N                 Queue mode: run a job that fails (or times out)
                              again, up to N more times, on another sub-node
                              if one is free. A queue entry's own 'retries:'
                              wins.
  --retry-lost                Queue mode: a job lost with its host (outcome
                              unknown) runs again too: at least once, not at
                              most once. An entry's 'retry_lost:' wins.
  --halt=WHEN                 Queue and broadcast modes: stop taking jobs after
                              failures, as GNU parallel: 'soon,fail=N' once
                              N jobs failed (running jobs finish), 'now,fail=N'
                              also stops the running jobs; 'fail=P%' once P%
                              of at least 10 finished jobs failed
                              (default: never).
  --failed                    requeue: move failed.yaml's jobs, not
                              interrupted.yaml's.
  -p N --print-period=N       Print every Nth line of job output; 0 prints no
                              job output [default: 1].
  -Q PATH --queue-file=PATH   The queue file [default: queue.yaml].
  -H PATH --hosts-file=PATH   The hosts file [default: hosts.yaml].
  --ssh-config=FILE           Use this OpenSSH config file instead of your
                              own ~/.ssh/config (like ssh -F).
  --orphan-timeout=DURATION   How long a remote job runs on without a word
                              from Pegasus (it paused, slept or lost the
                              network) before the node stops it; when
                              Pegasus dies its jobs stop at once. Seconds
                              (90), or with a unit: 90s, 30m, 1.5h, 1d; at
                              least 10s [default: 10m].
  --log-dir=DIR               Queue and broadcast modes, log: the folder of
                              the job logs and joblog.tsv (default: logs/
                              beside the queue file).
  --no-logs                   Queue and broadcast modes: write no job logs.
  -f --follow                 log: print the log as it grows, until the job
                              ends.
  --json                      status: print one JSON document.
  --now                       stop: stop the running jobs too.
  -h --help                   Show this help.
  --version                   Show the version.

Exit status: 0 every job succeeded, 1 some job failed or was lost, 2 bad usage
or bad input, 3 no host could be reached (broadcast: some host), 74 Pegasus's
output or files could not be written, 130 stopped by Ctrl-c, 143 stopped by
SIGTERM. status, stop, kill: 0 done, 2 a job id that is not running (nothing
killed), 3 no Pegasus runs on the queue (or it cannot be reached).
"""

from __future__ import annotations

import errno
import gc
import math
import os
import re
import sys
from typing import List, Optional

from pegasus import __version__, halt, retry, selection
from pegasus.errors import ExitStatus, PegasusError, UsageError, output_failure
from pegasus.options import MIN_ORPHAN_TIMEOUT, Options, parse_duration


def parse_args(argv: List[str]) -> Options:
    from docopt import DocoptExit, docopt

    try:
        args = docopt(__doc__, argv, default_help=False)
    except DocoptExit as err:
        problem = (_selection_misplaced(argv) or _NEEDS_ID.get(argv[0])) if argv else None
        raise UsageError(f"{problem or _usage_problem(err)}\n{_usage()}") from None
    return _options(args)


# What docopt calls an unknown word when a mode that needs job ids has none.
_NEEDS_ID = {"log": "pegasus log: give the id of a job (pegasus status shows the running "
                    "ones; job ids are in the job frames and logs/joblog.tsv)",
             "kill": "pegasus kill: give the id of each job to stop (pegasus status shows "
                     "the running ones)"}


def _selection_misplaced(argv: List[str]) -> Optional[str]:
    """--limit/--exclude given to a mode whose usage line has no place for them."""
    for option in ("--limit", "--exclude"):
        if any(arg == option or arg.startswith(option + "=") for arg in argv):
            return dict((o, words) for o, _, words in _MODE_OPTIONS)[option]
    return None


def _usage_problem(err) -> str:
    """docopt's complaint in a user's words (it names its own classes)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    found = re.findall(r"(?:Argument|Option|Command)\((?:None|'([^']*)'), "
                       r"(?:None|'([^']*)')", first)
    names = [short or long for short, long in found]
    if names:
        return "unknown mode or option: " + " ".join(names)
    return first if first and not first.lower().startswith("usage") else "bad usage"


def _usage() -> str:
    usage = __doc__.split("Usage:")[1].split("Modes:")[0]
    return "usage:" + usage.rstrip() + "\n(run 'pegasus --help' for the options)"


# Options that only one mode or two use: elsewhere they are usage errors, as
# their absence would be silent (-e in queue mode would abort nothing).
_MODE_OPTIONS = (("--error-aborts", "b", "-e/--error-aborts is for broadcast mode (b)"),
                 ("--ignore-errors", "b", "-i/--ignore-errors is for broadcast mode (b)"),
                 ("--fold", "qb", "--fold is for queue and broadcast modes (q, b)"),
                 ("--editor", "l", "--editor is for lock mode (l)"),
                 ("--daemon", "qb", "-d/--daemon is for queue and broadcast modes (q, b)"),
                 ("--dry-run", ("q", "b", "requeue"),
                  "--dry-run is for queue and broadcast modes (q, b) and requeue"),
                 ("-n", "qb", "-n is for dry runs (--dry-run) of queue and broadcast modes"),
                 ("--timeout", "qb", "--timeout is for queue and broadcast modes (q, b)"),
                 ("--halt", "qb", "--halt is for queue and broadcast modes (q, b)"),
                 ("--retries", "q", "--retries is for queue mode (q)"),
                 ("--retry-lost", "q", "--retry-lost is for queue mode (q)"),
                 ("--failed", ("requeue",), "--failed is for requeue"),
                 ("--no-logs", "qb", "--no-logs is for queue and broadcast modes (q, b)"),
                 ("--log-dir", ("q", "b", "log"),
                  "--log-dir is for queue and broadcast modes (q, b) and log"),
                 ("--limit", "qb", "--limit is for queue and broadcast modes (q, b)"),
                 ("--exclude", "qb", "--exclude is for queue and broadcast modes (q, b)"),
                 ("--skip-unreachable", "b", "--skip-unreachable is for broadcast mode (b); "
                  "queue mode always starts with the hosts it can reach"),
                 ("--json", ("status",), "--json is for status"),
                 ("--now", ("stop",), "--now is for stop"))


def _options(args) -> Options:
    mode = next(m for m in ("q", "b", "l", "requeue", "log", "status", "stop", "kill")
                if args[m])
    for option, modes, words in _MODE_OPTIONS:
        if args[option] and mode not in modes:
            raise UsageError(f"{words}\n{_usage()}")
    if args["--ignore-errors"] and args["--error-aborts"]:
        raise UsageError("-i/--ignore-errors (go on after a failed step) and "
                         "-e/--error-aborts (stop after it) contradict each other: give one "
                         f"or the other\n{_usage()}")
    _check_queue_folder(args["--queue-file"])
    period = args["--print-period"]
    if not period.isdigit():
        raise UsageError(f"--print-period must be a whole number >= 0, not '{period}'")
    config = args["--ssh-config"]
    if config is not None and not os.path.isfile(config):
        raise UsageError(f"--ssh-config {config}: no such file (give an OpenSSH "
                         "client config file, as for 'ssh -F')")
    return Options(mode, args["--daemon"], args["--error-aborts"], args["--editor"],
                   int(period), args["--queue-file"], args["--hosts-file"],
                   args["--ssh-config"], _orphan_timeout(args["--orphan-timeout"]),
                   _job_timeout(args["--timeout"]), _halt(args["--halt"]),
                   args["--failed"], args["--dry-run"],
                   _shown(args["-n"], args["--dry-run"]),
                   _log_dir(args), _job_id(args["ID"][0] if mode == "log" else None),
                   args["--follow"], args["--json"], args["--now"],
                   tuple(_job_id(text, "kill") for text in args["ID"]) if mode == "kill"
                   else (),
                   retry.Defaults(_retries(args["--retries"]), args["--retry-lost"]),
                   fold=args["--fold"], selection=_selection(args),
                   skip_unreachable=args["--skip-unreachable"])


def _selection(args) -> selection.Selection:
    """--limit and --exclude, parsed (an @FILE is read now)."""
    return selection.Selection(
        tuple(selection.parse("--limit", text) for text in args["--limit"]),
        tuple(selection.parse("--exclude", text) for text in args["--exclude"]))


def _log_dir(args) -> Optional[str]:
    if args["--no-logs"]:
        if args["--log-dir"] is not None:
            raise UsageError("--no-logs and --log-dir: give one or the other")
        return None
    return args["--log-dir"] or os.path.join(os.path.dirname(args["--queue-file"]), "logs")


def _job_id(text: Optional[str], command: str = "log") -> Optional[int]:
    if text is None:
        return None
    if not text.lstrip("#").isdigit():
        raise UsageError(f"pegasus {command} {text}: a job id is a whole number, as in "
                         f"'=== run #17 ...' (pegasus {command} 17)")
    return int(text.lstrip("#"))


def _shown(text: Optional[str], dry_run: bool) -> Optional[int]:
    """-n N: how many jobs a dry run prints (None: all)."""
    if text is None:
        return None
    if not dry_run:
        raise UsageError(f"-n limits the jobs a dry run prints: give --dry-run too\n{_usage()}")
    if not text.isdigit():
        raise UsageError(f"-n must be a whole number >= 0, not '{text}'")
    return int(text)


def _orphan_timeout(text: str) -> int:
    """--orphan-timeout in whole seconds (rounded up), at least MIN_ORPHAN_TIMEOUT."""
    seconds = parse_duration(text)
    if seconds is None:
        raise UsageError(f"--orphan-timeout must be a duration (90, 90s, 30m, 2h, 1d; at "
                         f"least {MIN_ORPHAN_TIMEOUT} s), not '{text}'")
    if seconds < MIN_ORPHAN_TIMEOUT:
        raise UsageError(f"--orphan-timeout {text}: too short; it must be at least "
                         f"{MIN_ORPHAN_TIMEOUT} s, or the nodes would stop healthy jobs "
                         "between two of Pegasus's heartbeats")
    return math.ceil(seconds)


def _job_timeout(text: Optional[str]) -> Optional[float]:
    """--timeout in seconds (None: jobs run as long as they take)."""
    if text is None:
        return None
    seconds = parse_duration(text)
    if not seconds:
        raise UsageError(f"--timeout must be a duration longer than 0 (90, 90s, 30m, 2h, "
                         f"1d), not '{text}'")
    return seconds


def _retries(text: Optional[str]) -> int:
    if text is None:
        return 0
    if not text.isdigit():
        raise UsageError(f"--retries must be a whole number of 0 or more (how many more "
                         f"times a failed job runs), not '{text}'")
    return int(text)


def _halt(text: Optional[str]) -> Optional[halt.Policy]:
    if text is None:
        return None
    try:
        return halt.parse(text)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _check_queue_folder(path: str) -> None:
    """Before anything: the folder of -Q, where its lock and records go, exists."""
    folder = os.path.dirname(path)
    if not folder or os.path.isdir(folder):
        return
    what = (f"{folder} is not a folder" if os.path.exists(folder)
            else f"the folder {folder} does not exist")
    raise UsageError(f"-Q {path}: {what}; create it or give another path")


def main(argv: Optional[List[str]] = None) -> int:
    """Run Pegasus; return the exit status. The one place errors become words."""
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        return _print(__doc__.strip())
    if "--version" in argv:
        return _print(f"pegasus {__version__}")
    try:
        from pegasus import app

        return app.run(parse_args(argv))
    except PegasusError as err:
        print(f"pegasus: {err}", file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt:
        print("pegasus: interrupted by Ctrl-c", file=sys.stderr)
        return ExitStatus.INTERRUPTED


def _print(text: str) -> int:
    """Help and version. Output that cannot be written is exit 74, as in a run."""
    try:
        if sys.stdout is None:  # started with fd 1 closed (``>&-``)
            raise OSError(errno.EBADF, "standard output is closed")
        print(text, flush=True)
    except (OSError, ValueError) as err:  # a closed pipe, a full disk, a closed file
        _silence_stdout()
        _complain(output_failure(err))
        return ExitStatus.IO_ERROR
    return ExitStatus.OK


def _complain(text: str) -> None:
    """``pegasus: text`` on stderr, while stderr is open."""
    if sys.stderr is None:
        return
    try:
        print(f"pegasus: {text}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the exit's flush of a broken stdout says nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def run() -> None:
    """Console-script entry point."""
    status = main()
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError:
        _silence_stdout()
    gc.freeze()  # the exit's collections skip every object left: some 40 ms of a short run
    sys.exit(status)
