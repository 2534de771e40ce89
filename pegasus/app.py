"""Put a run together from the options: hosts, queue, output, connections."""

from __future__ import annotations

import sys

from pegasus import hostsfile, modes
from pegasus.cli import Options
from pegasus.errors import ExitStatus, InputError
from pegasus.output import Sink
from pegasus.queuefile import QueueFile


def run(opts: Options) -> ExitStatus:
    if opts.mode == "l":
        from pegasus import lockmode

        return lockmode.run(opts)
    sink = Sink.for_terminal(sys.stdout.buffer, opts.print_period)
    nodes = hostsfile.load(opts.hosts_file)
    queue = QueueFile(opts.queue_file, on_lock_wait=lambda path: sink.message(
        f"waiting for the queue lock {path} (someone is editing the queue)"))
    run = modes.Run(nodes, {}, queue, sink, opts.daemon, opts.error_aborts)
    _check_queue(queue, run, sink, opts.daemon)
    run.executors = modes.connect_all(nodes, opts.ssh_config)
    mode = modes.broadcast_mode if opts.mode == "b" else modes.queue_mode
    try:
        return mode(run)
    finally:
        modes.close_all(set(run.executors.values()))


def _check_queue(queue: QueueFile, run: modes.Run, sink: Sink, daemon: bool) -> None:
    """Bad input anywhere in the queue: say so and take nothing.

    A daemon says so too but goes on: it takes the entries before the bad
    one and then waits for the file to be fixed.
    """
    try:
        queue.check_all(run.check)
    except InputError as err:
        if not daemon:
            raise
        sink.message(f"{err}\n(daemon mode: entries before it will run; Pegasus "
                     "then waits for it to be fixed)")
