"""Put a run together from the options: hosts, queue, output, connections."""

from __future__ import annotations

import os
import sys

from pegasus import broadcast, hostsfile, modes
from pegasus.cli import Options
from pegasus.connecting import Connector, close_all
from pegasus.errors import ExitStatus, HostsUnreachable, InputError
from pegasus.journal import Journal
from pegasus.output import Sink
from pegasus.queuefile import QueueFile


def run(opts: Options) -> ExitStatus:
    if opts.mode == "l":
        from pegasus import lockmode

        return lockmode.run(opts)
    if opts.mode == "requeue":
        return requeue(opts)
    sink = Sink.for_terminal(sys.stdout.buffer, opts.print_period)
    nodes = hostsfile.load(opts.hosts_file)
    queue = QueueFile(opts.queue_file, on_lock_wait=lambda path: sink.message(
        f"waiting for the queue lock {path} (someone is editing the queue)"))
    run = modes.Run(nodes, {}, queue, sink, opts.daemon, opts.error_aborts)
    run.journal = _open_journal(queue, sink)
    try:
        _check_queue(queue, run, sink, opts.daemon)
        run.connector = Connector(nodes, opts.ssh_config)
        run.executors = _connect(run, opts.mode)
    except BaseException:
        run.journal.close()
        raise
    mode = broadcast.broadcast_mode if opts.mode == "b" else modes.queue_mode
    try:
        return mode(run)
    finally:
        run.journal.close()
        close_all(run.executors.values())


def _open_journal(queue: QueueFile, sink: Sink) -> Journal:
    """Settle what a Pegasus that died left behind (see journal.py), say so."""
    journal, put_back, interrupted = queue.open_journal()
    if put_back:
        sink.message(f"a previous Pegasus stopped before starting {put_back} job(s) it "
                     f"had taken; they are back at the head of {queue.path}")
    if interrupted:
        nodes = ", ".join(sorted({node for _, node in interrupted}))
        sink.message(f"a previous Pegasus stopped while {len(interrupted)} job(s) ran "
                     f"(on {nodes}); their outcome is unknown, so they are not run "
                     f"again: see {queue.interrupted_path}, and run 'pegasus requeue' "
                     "to put them back in the queue")
    return journal


def _connect(run: modes.Run, mode: str):
    """Broadcast needs every host; queue mode starts with those it can reach.

    A changed host key or a refused login is never worked around: it stops
    the run before anything is taken, in every mode.
    """
    executors, failed = run.connector.connect_all(run.nodes)
    fatal = any(err.fatal for err in failed)
    if failed and (mode == "b" or not executors or fatal):
        close_all(executors.values())
        raise HostsUnreachable(failed)
    for err in failed:
        run.sink.message(f"{err}; running on the other hosts and retrying this one "
                         "in the background")
    return executors


def _check_queue(queue: QueueFile, run: modes.Run, sink: Sink, daemon: bool) -> None:
    """Bad input anywhere in the queue: say so and take nothing.

    A daemon says so too but goes on: it takes the entries before the bad
    one and then waits for the file to be fixed.
    """
    if not os.path.exists(queue.path):
        sink.message(f"{queue.path} does not exist: an empty queue" +
                     (" (entries written to it will run)" if daemon else ""))
    try:
        queue.check_all(run.check)
    except InputError as err:
        if not daemon:
            raise
        sink.message(f"{err}\n(daemon mode: entries before it will run; Pegasus "
                     "then waits for it to be fixed)")


def requeue(opts: Options) -> ExitStatus:
    """Move interrupted.yaml's entries back to the head of the queue."""
    queue = QueueFile(opts.queue_file)
    moved = queue.requeue()
    print(f"pegasus: {moved} interrupted job(s) moved from {queue.interrupted_path} "
          f"to the head of {queue.path}")
    return ExitStatus.OK
