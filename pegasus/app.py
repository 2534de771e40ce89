"""Put a run together from the options: hosts, queue, output, connections."""

from __future__ import annotations

import shlex
import sys

import gevent
import gevent.hub

from pegasus import broadcast, checks, control, expand, hostlists, hostswatch, modes, records, running
from pegasus.connecting import Connector, close_all, end_leftovers
from pegasus.errors import (ExitStatus, HostsUnreachable, StorageError, output_failure,
                            unreachable_lines)
from pegasus.fold import FoldedSteps, FoldedSummary
from pegasus.joblogs import JobLogs
from pegasus.options import Options
from pegasus.output import Sink
from pegasus.queuefile import QueueFile
from pegasus.words import plural

FIRST_ANSWER = 2.0  # seconds queue mode waits for every host's first answer


def run(opts: Options) -> ExitStatus:
    _errors_are_values()
    folded = {"b": FoldedSteps, "q": FoldedSummary}.get(opts.mode) if opts.fold else None
    sink = (folded or Sink).for_terminal(
        getattr(sys.stdout, "buffer", None), opts.print_period)
    if opts.mode == "l":
        from pegasus import lockmode

        return lockmode.run(opts, sink)
    if opts.mode == "requeue":
        return _written(sink, requeue(opts, sink))
    if opts.mode == "log":
        from pegasus import logcmd

        return logcmd.run(opts, getattr(sys.stdout, "buffer", None))
    if opts.mode in ("status", "stop", "kill"):
        from pegasus import ctlcmd

        return ctlcmd.run(opts, getattr(sys.stdout, "buffer", None))
    if opts.dry_run:
        from pegasus import dryrun

        return _written(sink, dryrun.run(opts, sink))
    return run_mode(opts, sink)


def _errors_are_values() -> None:
    """An exception in a greenlet or a thread-pool call is its caller's value
    (``Greenlet.value``, ``apply`` raises it again): gevent's hub must not also
    print it as a traceback. parallel-ssh sets the same at import; a run loads
    it only for a host that is not local."""
    gevent.hub.Hub.NOT_ERROR = (Exception,)


def _written(sink: Sink, status: ExitStatus) -> ExitStatus:
    """A command outside the loop (a dry run, requeue) whose standard output
    could not be written ends as the loop's would: exit 74, said on stderr."""
    if sink.outlet.error is not None:
        raise StorageError(output_failure(sink.outlet.error))
    return status


def run_mode(opts: Options, sink: Sink) -> ExitStatus:
    """Queue or broadcast mode: everything is built before the loop starts."""
    broadcasting = opts.mode == "b"
    source = hostswatch.Source.before_reading(opts.hosts_file, broadcasting, opts.selection) \
        if opts.daemon else None  # a daemon reads hosts.yaml again when it changes
    nodes = checks.sub_nodes(opts)
    stop = running.StopFlag()
    queue = QueueFile(opts.queue_file, wait=stop.wait, pause=gevent.sleep,
                      on_lock_wait=lambda path: sink.message(
        f"waiting for the queue lock {path} (someone is editing the queue)"))
    job_records = _open_records(queue, sink, broadcasting)
    try:
        check = hostswatch.Check(nodes)
        counts = checks.check_queue(queue, check, sink, opts.daemon)
        logs = None if opts.log_dir is None else JobLogs(opts.log_dir, sink.message,
                                                         broadcasting)
        connector = Connector(nodes, opts.ssh_config, opts.orphan_timeout,
                              control.key(queue.path))
        executors, failed, connecting = _connect(connector, nodes, sink, opts, queue.path)
    except BaseException:
        job_records.close()
        raise
    skipped = tuple(dict.fromkeys(n.hostname for n in nodes if n not in executors)
                    ) if opts.skip_unreachable else ()
    run = running.Run([n for n in nodes if n.hostname not in skipped], executors, connecting,
                      [] if skipped else failed, connector, queue, job_records,
                      sink, stop, check, opts.daemon, opts.error_aborts,
                      counts[1] if counts else 0, opts.timeout, opts.halt, logs,
                      opts.retries, hosts_source=source, skipped=skipped,
                      rerun=rerun_command(opts))
    mode = broadcast.broadcast_mode if broadcasting else modes.queue_mode
    try:
        return mode(run)  # closes the connections
    finally:
        job_records.close()
        if logs is not None:
            logs.close()


def _they(count: int) -> str:
    return "it is" if count == 1 else "they are"


def _open_records(queue: QueueFile, sink: Sink, broadcasting: bool) -> records.Records:
    """Settle what a Pegasus that died left behind (see records.py), say so."""
    job_records, put_back, interrupted = records.open_run(queue, broadcasting)
    if put_back:
        sink.message(f"a previous Pegasus stopped before starting {plural(put_back, 'job')} "
                     f"it had taken; {_they(put_back)} back at the head of {queue.path}")
    if interrupted:
        nodes = ", ".join(sorted({node for _, node, _ in interrupted}))
        them = "it" if len(interrupted) == 1 else "them"
        sink.message(f"a previous Pegasus stopped while {plural(len(interrupted), 'job')} "
                     f"ran (on {nodes}); outcome unknown, so not run again: see "
                     f"{queue.interrupted_path}, and run 'pegasus requeue' to put {them} "
                     "back in the queue")
    end_leftovers(control.key(queue.path), interrupted, sink.message)
    return job_records


def _connect(connector: Connector, nodes, sink: Sink, opts: Options, queue_path: str):
    """Broadcast needs every host (unless --skip-unreachable); queue mode starts
    with those that answer.

    Queue mode waits ``FIRST_ANSWER`` seconds at most: a host still
    connecting then is waited for in the background (the others start), so
    that a changed host key or a refused login, never worked around, stops
    the run before anything is taken, and a dead host delays nothing.
    Returns (executors, errors, first connections still being made).
    """
    broadcasting = opts.mode == "b"
    executors, failed, connecting = connector.connect_all(
        nodes, wait=None if broadcasting else FIRST_ANSWER)
    if failed and broadcasting and opts.skip_unreachable and executors:
        _say_skipped(sink, failed, nodes, executors, queue_path, rerun_command(opts))
        return executors, failed, connecting
    fatal = any(err.fatal for err in failed)
    if failed and (broadcasting or fatal or not (executors or connecting)):
        close_all(executors.values())
        gevent.killall(list(connecting.values()))
        raise HostsUnreachable(failed, hostlists.write_unreachable(
            queue_path, [n.hostname for n in nodes if n not in executors
                         and n not in connecting],
            "" if not executors else  # no host left to run without them
            f"to run without them: {rerun_command(opts)} --exclude @{{path}}" +
            (" (or --skip-unreachable)" if broadcasting else "")))
    for line in _retrying_words(failed, others=bool(executors)):
        sink.message(line)
    if connecting:
        names = sorted({node.hostname for node in connecting})
        sink.message(f"connecting: {_some(names)} ({FIRST_ANSWER:g} s)...; jobs start on "
                     "the hosts that answered, these take jobs once connected")
    return executors, failed, connecting


def rerun_command(opts: Options) -> str:
    """``pegasus b`` and the files the run was given, for the hints that say how to
    run again on some hosts (``--limit @failed-hosts.txt``)."""
    words = ["pegasus", opts.mode]
    for flag, path, default in (("-Q", opts.queue_file, "queue.yaml"),
                                ("-H", opts.hosts_file, "hosts.yaml"),
                                ("--ssh-config", opts.ssh_config, None)):
        if path is not None and path != default:
            words += [flag, shlex.quote(path)]
    return " ".join(words)


def _say_skipped(sink: Sink, failed, nodes, executors, queue_path: str,
                 rerun: str) -> None:
    """--skip-unreachable: which hosts are left out, and where they are listed."""
    skipped = list(dict.fromkeys(n.hostname for n in nodes if n not in executors))
    reached = len({n.hostname for n in executors})
    sink.message(f"--skip-unreachable: skipping {plural(len(skipped), 'host')} that cannot "
                 "be reached:\n  " + "\n  ".join(unreachable_lines(failed)) +
                 f"\nbroadcasting to the other {plural(reached, 'host')}; the skipped ones are " +
                 hostlists.write_unreachable(queue_path, skipped, "once they are back: "
                                             f"{rerun} --limit @{{path}}"))


def _retrying_words(failed, others: bool):
    """Hosts not reached at start, and that they are retried while the others run."""
    if not failed:
        return []
    doing = "running on the other hosts and retrying" if others else "retrying"
    if len(failed) == 1:
        return [f"{failed[0]}; {doing} this one in the background" if others
                else f"{failed[0]}; {doing} in the background"]
    return unreachable_lines(failed) + [
        f"{doing} these {len(failed)} hosts in the background"]


def _some(names, shown: int = 5) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def requeue(opts: Options, sink: Sink) -> ExitStatus:
    """Move interrupted.yaml's (``--failed``: failed.yaml's) entries back to the
    head of the queue; ``--dry-run``: show them, move nothing."""
    queue = QueueFile(opts.queue_file)
    path, what = ((queue.failed_path, "failed job") if opts.failed
                  else (queue.interrupted_path, "interrupted job"))
    entries = records.requeue(queue, opts.failed, opts.dry_run)
    if not opts.dry_run:
        sink.message(f"{plural(len(entries), what)} moved from {path} to the head of "
                     f"{queue.path}")
        return ExitStatus.OK
    sink.message(f"--dry-run: {plural(len(entries), what)} would move from {path} to the "
                 f"head of {queue.path}" + (":" if entries else "; nothing changed"))
    if entries:
        sink.message(expand.entries_yaml(entries).rstrip("\n") + "\n(nothing changed)")
    return ExitStatus.OK
