"""The start-up checks of queue and broadcast mode, shared by a run and a dry run
(``dryrun``): the sub-nodes of hosts.yaml, and every entry of the queue."""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

import gevent

from pegasus import expand, hostsfile, selection
from pegasus.errors import WAITS_FOR_FIX, InputError
from pegasus.model import SubNode
from pegasus.options import Options
from pegasus.output import Sink
from pegasus.queuefile import QueueFile, refuse_hard_links, refuse_symlink


def sub_nodes(opts: Options) -> List[SubNode]:
    """hosts.yaml's sub-nodes that --limit and --exclude select; in broadcast mode
    one per host, holding all its slots."""
    nodes = selection.select(hostsfile.load(opts.hosts_file), opts.selection,
                             opts.hosts_file)
    return expand.whole_hosts(nodes) if opts.mode == "b" else nodes


def check_queue(queue: QueueFile, check, sink: Sink, daemon: bool,
                lock: bool = True) -> Optional[Tuple[int, int]]:
    """Bad input anywhere in the queue: say so and take nothing. Returns
    (entries, jobs) of a good queue.

    A daemon says so too but goes on (None): it takes the entries before the
    bad one and then waits for the file to be fixed. ``lock=False``: read
    without the queue lock (a dry run creates no lock file).
    """
    if not os.path.exists(queue.path):
        sink.message(f"{queue.path} does not exist: an empty queue" +
                     (" (entries written to it will run)" if daemon else ""))
    refuse_symlink(queue.consumed_path)  # never written through, so never started
    refuse_hard_links(queue.path)
    try:
        return _check_whole(queue, check, lock)
    except InputError as err:
        if not daemon:
            raise
        sink.message(f"{err.advising(None)}\n(daemon mode: the entries before it run "
                     f"first; {WAITS_FOR_FIX})")
        return None


def _check_whole(queue: QueueFile, check, lock: bool) -> Tuple[int, int]:
    """``check_all``; an error in a file just written is looked at again once the
    file is at rest (a writer without the lock may have been half-way through)."""
    try:
        return queue.check_all(check, lock=lock)
    except InputError:
        if queue.rest.now():
            raise
        while not queue.rest.now():
            gevent.sleep(0.05)
        return queue.check_all(check, lock=lock)
