"""failed-hosts.txt and unreachable-hosts.txt: the hosts of a run to run again on.

Gathered while a queue or broadcast run goes (``HostLists``) and written
beside the queue when it ends, one host name a line, for ``--limit @FILE``.
Each run that reaches its loop rewrites both: a list with no host is removed,
so the files always tell of the last run. Private (0600), written atomically.
"""

from __future__ import annotations

import os
import secrets
import shlex
from typing import Dict, Iterable, List, Sequence

from pegasus.diskio import fsync_folder, unlink_quietly, write_all
from pegasus.errors import StorageError
from pegasus.model import Outcome, Result
from pegasus.selection import fold
from pegasus.words import plural

FAILED, UNREACHABLE = "failed-hosts.txt", "unreachable-hosts.txt"
_LOST = (Outcome.LOST, Outcome.NOT_STARTED)  # the host, not the job, went wrong


class HostLists:
    """Hosts where a job (any attempt) or step failed; hosts not reached or lost."""

    def __init__(self, unreachable: Iterable[str] = ()):
        self.failed: Dict[str, None] = {}  # dicts: ordered sets
        self.unreachable: Dict[str, None] = dict.fromkeys(unreachable)

    def add(self, result: Result) -> None:
        if result.outcome in _LOST:
            self.lost(result.node.hostname)
        elif not result.ok:
            self.failed[result.node.hostname] = None

    def lost(self, hostname: str) -> None:
        self.unreachable[hostname] = None

    def write(self, queue_path: str, rerun: str, order: Sequence[str] = (),
              failed_jobs: str = "") -> List[str]:
        """Both files beside the queue, hosts in ``order`` (hosts.yaml's) as far as it
        goes; the words that tell the user (``rerun``: ``pegasus q -Q ...``, how to run
        again; ``failed_jobs``: queue mode's failed.yaml, where the jobs to run
        again are: running the rest of the queue on those hosts would not). Raises
        StorageError."""
        folder, rank = os.path.dirname(queue_path), {h: i for i, h in enumerate(order)}
        words = []
        for name, hosts, what, when in (
                (FAILED, self.failed, "failed", "to run on them only"),
                (UNREACHABLE, self.unreachable, "unreachable or lost",
                 "once they are back")):
            path = os.path.join(folder, name)
            hosts = sorted(hosts, key=lambda host: rank.get(host, len(rank)))
            _save(path, hosts)
            if not hosts:
                continue
            said = f"{plural(len(hosts), 'host')} {what} ({fold(hosts)}): listed in {path}; "
            if name == FAILED and failed_jobs:
                queue = "" if queue_path == "queue.yaml" else f" -Q {shlex.quote(queue_path)}"
                failed_yaml = os.path.join(folder, os.path.basename(failed_jobs))
                said += (f"the failed jobs are in {failed_yaml}: "
                         f"'pegasus requeue --failed{queue}' puts them back in the queue")
            else:
                said += f"{when}: {rerun} --limit @{path}"
            words.append(said)
        return words


def write_unreachable(queue_path: str, hosts: Iterable[str], advice: str) -> str:
    """unreachable-hosts.txt when a run starts without some hosts or refuses to;
    the words: where they are listed, then ``advice`` (``{path}``: the file's)."""
    path = os.path.join(os.path.dirname(queue_path), UNREACHABLE)
    try:
        _save(path, list(dict.fromkeys(hosts)))
    except StorageError as err:
        return f"not listed ({err})"
    return f"listed in {path}" + (f"; {advice.format(path=path)}" if advice else "")


def _save(path: str, hosts: List[str]) -> None:
    """Temporary file, fsync, rename, fsync folder; no hosts: no file."""
    folder = os.path.dirname(os.path.abspath(path))
    partial = os.path.join(folder, f".{os.path.basename(path)}.partial-{secrets.token_hex(6)}")
    try:
        if not hosts:
            return unlink_quietly(path)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, "".join(f"{host}\n" for host in hosts).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(partial, path)
        fsync_folder(folder)
    except OSError as err:
        unlink_quietly(partial)
        raise StorageError(f"cannot write {path}: {err.strerror or err}") from None
    return None
