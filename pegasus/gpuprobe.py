"""What ``nvidia-smi`` says about a host's GPUs, and which ones others use. Pure.

A host with ``gpu_probe`` in hosts.yaml is asked, before Pegasus places a job
there, ``<gpu_probe> GPU_QUERY`` and ``<gpu_probe> APPS_QUERY``: one line per
GPU (``index, uuid, memory.used, memory.total``) and one per compute process
(``gpu_uuid, pid, used_memory``), comma-separated, no header, no units.
Slot i is GPU index i. A GPU runs someone else's work when a compute process
runs on it or it uses more than ``gpu_busy_mib`` MiB; which of those GPUs
Pegasus itself gave out is not known here (the caller leaves them out).
Anything that does not read as that output is a ``ValueError``: never "free".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

GPU_QUERY = "--query-gpu=index,uuid,memory.used,memory.total --format=csv,noheader,nounits"
APPS_QUERY = "--query-compute-apps=gpu_uuid,pid,used_memory --format=csv,noheader,nounits"
NOT_KNOWN = ("[N/A]", "[Not Supported]", "N/A")  # how nvidia-smi prints a value it lacks


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    used_mib: Optional[int]  # None: nvidia-smi does not report it (``[N/A]``)
    total_mib: Optional[int]


@dataclass(frozen=True)
class App:
    """A compute process on a GPU (its pid may mean nothing outside a container)."""

    gpu_uuid: str
    pid: str
    used_mib: Optional[int]


@dataclass(frozen=True)
class Reading:
    """One probe of one host: its GPUs and their compute processes."""

    gpus: Tuple[Gpu, ...]
    apps: Tuple[App, ...] = ()


def parse(gpus_text: str, apps_text: str) -> Reading:
    """Both queries' output as a ``Reading``; ValueError in words if either is not."""
    return Reading(parse_gpus(gpus_text), parse_apps(apps_text))


def parse_gpus(text: str) -> Tuple[Gpu, ...]:
    """``GPU_QUERY``'s output: one GPU a line, at least one, each index once."""
    gpus: List[Gpu] = []
    for number, fields in _rows(text, 4, "index, uuid, memory.used, memory.total"):
        index = _number(fields[0], "GPU index", number)
        if index is None:
            raise ValueError(f"line {number}: the GPU index is not reported")
        if any(gpu.index == index for gpu in gpus):
            raise ValueError(f"line {number}: GPU {index} is listed twice")
        gpus.append(Gpu(index, fields[1], _number(fields[2], "memory.used", number),
                        _number(fields[3], "memory.total", number)))
    if not gpus:
        raise ValueError("it lists no GPU")
    return tuple(gpus)


def parse_apps(text: str) -> Tuple[App, ...]:
    """``APPS_QUERY``'s output: one compute process a line (none: empty output)."""
    return tuple(App(fields[0], fields[1], _number(fields[2], "used_memory", number))
                 for number, fields in _rows(text, 3, "gpu_uuid, pid, used_memory"))


def busy(reading: Reading, slot_count: int, busy_mib: int) -> Dict[int, str]:
    """The slots (0..slot_count-1) whose GPU is in use or unknown, and why, in words."""
    by_index = {gpu.index: gpu for gpu in reading.gpus}
    found: Dict[int, str] = {}
    for slot in range(slot_count):
        gpu = by_index.get(slot)
        why = f"the probe lists no GPU {slot}" if gpu is None else _why_busy(
            gpu, [app for app in reading.apps if app.gpu_uuid == gpu.uuid], busy_mib)
        if why is not None:
            found[slot] = why
    return found


def describe(host: str, skipped: Dict[int, str]) -> str:
    """What Pegasus says when the GPUs of ``host`` it skips change."""
    if not skipped:
        return f"host {host}: no GPU is in use by others now"
    listed = "; ".join(f"GPU {slot}: {why}" for slot, why in sorted(skipped.items()))
    tail = "it takes no job until it is" if len(skipped) == 1 else \
        "they take no job until they are"
    return f"host {host}: skipping {_gpus(skipped)}, in use by others ({listed}); {tail} free"


def _why_busy(gpu: Gpu, apps: List[App], busy_mib: int) -> Optional[str]:
    if apps:
        pids = ", ".join(app.pid for app in apps[:3]) + (", ..." if len(apps) > 3 else "")
        return f"{len(apps)} compute process{'es' if len(apps) > 1 else ''} (pid {pids})"
    if gpu.used_mib is None:
        return "its memory use is not reported"
    if gpu.used_mib > busy_mib:
        return f"{gpu.used_mib} MiB used, more than gpu_busy_mib {busy_mib}"
    return None


def _gpus(slots: Iterable[int]) -> str:
    ordered = [str(slot) for slot in sorted(slots)]
    if len(ordered) == 1:
        return f"GPU {ordered[0]}"
    return "GPUs " + ", ".join(ordered[:-1]) + " and " + ordered[-1]


def _rows(text: str, width: int, names: str):
    """(line number, fields) of each non-blank line, exactly ``width`` fields."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != width or not all(fields):
            raise ValueError(f"line {number} ({_shown(line)}) is not '{names}'")
        yield number, fields


def _number(field: str, name: str, line: int) -> Optional[int]:
    if field in NOT_KNOWN:
        return None
    if not re.fullmatch(r"[0-9]+", field):
        raise ValueError(f"line {line}: {name} {_shown(field)} is not a whole number")
    return int(field)


def _shown(text: str, limit: int = 80) -> str:
    text = text.strip()
    return "'" + (text if len(text) <= limit else text[:limit] + "...") + "'"
