"""Job ids: whole numbers, unique for a queue file and increasing across runs.

The next free id is kept beside the queue in ``.<queue name>.job-id`` (one
number and a newline), read and rewritten under the queue lock by every
take, *before* the take is journaled, so a crash of Pegasus can skip ids
(reserved, never used) but never hand one out twice. It is not fsynced (an
fsync a take cost 3.5 ms here, as much as the rest of a job): the journal's
``taken`` records, which are, carry the ids, and recovery moves the counter
past every id a dead Pegasus's journal names (``at_least``), so after an
operating-system crash too the ids of the jobs still in a journal are not
given again.
"""

from __future__ import annotations

import os

from pegasus.diskio import write_all
from pegasus.errors import StorageError
from pegasus.queuefile import storage_error


def counter_path(queue_path: str) -> str:
    folder, name = os.path.split(queue_path)
    return os.path.join(folder, f".{name}.job-id")


def reserve(queue_path: str, count: int) -> int:
    """The first of ``count`` new ids (call under the queue lock)."""
    path = counter_path(queue_path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise storage_error(path, "open", err) from None
    try:
        first = _next_id(path, os.pread(fd, 64, 0))
        write_all(fd, f"{first + count}\n".encode())  # never shorter: ids only grow
    except OSError as err:
        raise storage_error(path, "write", err) from None
    finally:
        os.close(fd)
    return first


def peek(queue_path: str) -> int:
    """The next free id, read without reserving it (a dry run: no lock, no write)."""
    path = counter_path(queue_path)
    try:
        with open(path, "rb") as file:
            return _next_id(path, file.read(64))
    except FileNotFoundError:
        return 1
    except OSError as err:
        raise storage_error(path, "read", err) from None


def at_least(queue_path: str, next_id: int) -> None:
    """Recovery: the next id is ``next_id`` or more (call under the queue lock)."""
    first = reserve(queue_path, 0)
    if first < next_id:
        reserve(queue_path, next_id - first)


def _next_id(path: str, data: bytes) -> int:
    text = data.decode("ascii", "replace").strip()
    if not text:
        return 1
    if not text.isdigit():
        raise StorageError(f"{path}: holds '{text[:20]}', not the next job id; write the "
                           "next free id in it (a whole number), or delete it to count from 1")
    return int(text)
