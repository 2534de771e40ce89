"""Cartesian expansion of hosts.yaml and queue.yaml entries; canonical form.

Pure functions from plain values (as ``yamltree`` reads them) to ``SubNode``
and ``Job`` values, and back from jobs to YAML text. No file I/O.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from dataclasses import replace
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import yaml

from pegasus import retry, slots, slurmentry, template
from pegasus.errors import InputError
from pegasus.model import GPU_BUSY_MIB, GpuProbe, Job, SubNode, params_of
from pegasus.options import parse_duration

MAX_JOBS_PER_ENTRY = 100_000  # a product beyond this is refused, not built

try:
    _Dumper = yaml.CSafeDumper
except AttributeError:  # pragma: no cover
    _Dumper = yaml.SafeDumper


def _values(name: str, raw, where: str) -> List[str]:
    """A parameter's values: a scalar or a list of scalars, as typed."""
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise InputError(f"{where}: '{name}' is an empty list, so the entry "
                         "expands to nothing; give it at least one value")
    for value in values:
        if not isinstance(value, str):
            raise InputError(f"{where}: the values of '{name}' must be plain "
                             "values, not lists or mappings")
        if value == "":
            raise InputError(f"{where}: '{name}' has an empty value; give it a "
                             "value or remove it")
        if not value.strip():
            raise InputError(f"{where}: '{name}' has a value of only whitespace "
                             f"({value!r}); give it a value or remove it")
        _refuse_nul(value, "this entry's command" if (where, name) == ("this entry", "command")
                    else f"the value {value!r} of '{name}'")
    return values


def _refuse_nul(text: str, what: str) -> None:
    """A NUL cannot reach a command: ssh dropped it, a local exec refused it."""
    if "\0" in text:
        raise InputError(f"{what} holds a NUL character ('\\0'), and a command cannot "
                         "carry it; remove it")


def _product(axes: Dict[str, List[str]], where: str) -> Iterable[Dict[str, str]]:
    size = math.prod(len(v) for v in axes.values())
    if size > MAX_JOBS_PER_ENTRY:
        raise InputError(f"{where} expands to {size} combinations, more than the "
                         f"limit of {MAX_JOBS_PER_ENTRY}; split it into smaller entries")
    names = list(axes)
    for combo in itertools.product(*(axes[n] for n in names)):
        yield dict(zip(names, combo))


# ---------------------------------------------------------------- hosts.yaml

def expand_hosts(entries: Sequence, lines: Sequence[int] = ()) -> List[SubNode]:
    """Sub-nodes of hosts.yaml entries, in file order. ``lines`` are 1-based.

    A host with ``slots: N`` gives N sub-nodes (its lanes, see ``SubNode``).
    """
    nodes: List[SubNode] = []
    slot_hosts: Dict[str, int] = {}  # hostname -> the entry that gave it slots
    for i, entry in enumerate(entries):
        line = lines[i] if i < len(lines) else None
        try:
            made = _host_entry(entry, len(nodes))
            _one_slot_entry_per_host(made, i + 1, slot_hosts, lines)
        except InputError as err:
            raise err.at(line=line, entry=i + 1) from None
        nodes.extend(made)
    if not nodes:
        raise InputError("lists no hosts; add at least one, e.g. '- localhost'")
    return _numbered(nodes)


def _numbered(nodes: List[SubNode]) -> List[SubNode]:
    """A host listed again with the same parameters is one more sub-node (one more
    job at a time there, as in the original); ``copy`` tells their labels apart."""
    counts = Counter((n.hostname, n.params, n.lane) for n in nodes)
    seen: Counter = Counter()
    numbered = []
    for node in nodes:
        key = (node.hostname, node.params, node.lane)
        if counts[key] > 1:
            seen[key] += 1
            node = replace(node, copy=seen[key])
        numbered.append(node)
    return numbered


def _host_entry(entry, first_index: int) -> List[SubNode]:
    if isinstance(entry, str):
        return [SubNode(first_index, _hostname(entry))]
    if not isinstance(entry, dict):
        raise InputError("a host entry must be a hostname or a mapping with a "
                         "'hostname' key")
    if "slurm" in entry:
        return slurmentry.sub_nodes(entry, first_index)
    if "hostname" not in entry:
        raise InputError("this host entry has no 'hostname' key; add one "
                         "(e.g. 'hostname: node-1')")
    count = _host_slots(entry["slots"]) if "slots" in entry else 0
    probe = _gpu_probe(entry)
    hook = _one_value(entry["cancel"], "cancel", "'cancel: docker stop ...'") \
        if "cancel" in entry else None
    axes = {name: _values(name, raw, "host entry") for name, raw in entry.items()
            if name not in HOST_SETTINGS}
    nodes = []
    for point in _product(axes, "this host entry"):
        params = {k: v for k, v in point.items() if k != "hostname"}
        name = _render_hostname(point["hostname"], params)
        for lane in range(max(count, 1)):
            nodes.append(SubNode(first_index + len(nodes), name, params_of(params),
                                 lane, count, probe=probe, cancel=hook))
    return nodes


HOST_SETTINGS = frozenset({"slots", "gpu_probe", "gpu_busy_mib", "cancel"})  # not names


def _gpu_probe(entry: dict) -> Optional[GpuProbe]:
    """A host's ``gpu_probe`` and ``gpu_busy_mib``: only with ``slots`` (GPUs)."""
    given = [name for name in ("gpu_probe", "gpu_busy_mib") if name in entry]
    if not given:
        return None
    if "slots" not in entry:
        raise InputError(f"'{given[0]}' needs 'slots' on the same entry (slot i is GPU i); "
                         "add e.g. 'slots: 8', or remove it")
    if "gpu_probe" not in entry:
        raise InputError("'gpu_busy_mib' only matters with 'gpu_probe'; add e.g. "
                         "'gpu_probe: nvidia-smi', or remove it")
    command = _one_value(entry["gpu_probe"], "gpu_probe", "'gpu_probe: nvidia-smi'")
    if "gpu_busy_mib" not in entry:
        return GpuProbe(command)
    mib = _one_value(entry["gpu_busy_mib"], "gpu_busy_mib", "'gpu_busy_mib: 1024'")
    if not re.fullmatch(r"[0-9]+", mib.strip()):
        raise InputError(f"'gpu_busy_mib: {mib}' is not a whole number of MiB; give 0 or "
                         f"more, e.g. 'gpu_busy_mib: {GPU_BUSY_MIB}' (the default)")
    return GpuProbe(command, int(mib))


def _one_value(raw, name: str, example: str) -> str:
    """A host setting: one plain value (a one-item list is tolerated, as for slots)."""
    value = raw[0] if isinstance(raw, list) and len(raw) == 1 else raw
    if isinstance(value, list):
        raise InputError(f"'{name}' is a list; a host has one, e.g. {example}")
    return _values(name, value, "host entry")[0]


def whole_hosts(nodes: Sequence[SubNode]) -> List[SubNode]:
    """Broadcast's sub-nodes: one lane per host with slots, holding all its slots."""
    return [replace(node, slots=tuple(range(node.slot_count))) if node.slot_count else node
            for node in nodes if not node.lane]


def _host_slots(raw) -> int:
    """A host's ``slots``: one whole number >= 1 (a one-item list is tolerated)."""
    value = raw[0] if isinstance(raw, list) and len(raw) == 1 else raw
    if isinstance(value, str) and value.strip().isdigit() and int(value) >= 1:
        return int(value)
    if isinstance(raw, list):
        shown = ", ".join(map(str, raw))
        raise InputError(f"'slots' is a list ([{shown}]); a host has one number of "
                         "slots, e.g. 'slots: 8'")
    raise InputError(f"'slots: {value}' is not a number of slots; give a whole number "
                     "of 1 or more, e.g. 'slots: 8' (one slot per GPU)")


def _one_slot_entry_per_host(made: Sequence[SubNode], entry: int,
                             slot_hosts: Dict[str, int], lines: Sequence[int]) -> None:
    """Two sub-nodes giving slots to one machine would hand out its GPUs twice."""
    for node in made:
        if not node.slot_count or node.lane:
            continue
        first = slot_hosts.setdefault(node.hostname, entry)
        if first == entry and sum(1 for n in made if n.hostname == node.hostname
                                  and not n.lane) > 1:
            raise InputError(f"this entry gives host {node.hostname} slots on several "
                             "sub-nodes, which would hand out its slots (GPUs) twice; "
                             "give 'slots' to a host without sub-node parameters")
        if first != entry:
            where = f" (line {lines[first - 1]})" if first - 1 < len(lines) else ""
            raise InputError(f"host {node.hostname} is also given slots by entry {first}"
                             f"{where}, which would hand out its slots (GPUs) twice; "
                             "keep one entry with 'slots' for each host")


def _render_hostname(raw: str, params: Dict[str, str]) -> str:
    return _hostname(template.render(raw, params))


def _hostname(name: str) -> str:
    _refuse_nul(name, f"hostname {name!r}")
    name = name.strip()
    if not name:
        raise InputError("a hostname is empty")
    if name.startswith("-"):
        raise InputError(f"hostname '{name}' starts with '-'; that would be read "
                         "as an ssh option")
    return name


# ---------------------------------------------------------------- queue.yaml

def expand_entry(entry, line: Optional[int] = None) -> List[Job]:
    """The jobs of one queue entry (a command, or a mapping with 'command')."""
    if isinstance(entry, str):
        if not entry.strip():
            raise InputError("this entry's command is empty")
        _refuse_nul(entry, "this entry's command")
        return [Job(entry, (), line)]
    if not isinstance(entry, dict):
        raise InputError("an entry must be a command or a mapping with a "
                         "'command' key")
    if "command" not in entry:
        hint = ""
        if len(entry) == 1 and " " in next(iter(entry)):
            hint = ("; if it is one command, quote it: YAML reads a ': ' (or ':' "
                    "and a tab) in a plain line as a key and its value")
        raise InputError("this entry has no 'command' key; add one (e.g. "
                         "'command: echo {{ x }}')" + hint)
    axes = {name: _values(name, raw, "this entry") for name, raw in entry.items()}
    if "allocation_policy" in axes:  # a setting, not a sweep: its first value (as the original)
        axes["allocation_policy"] = axes["allocation_policy"][:1]
    if "retry_on" in axes:  # one setting, a list of exit statuses
        axes["retry_on"] = [",".join(value.strip() for value in axes["retry_on"])]
    for name, (what, example) in ONE_VALUE.items():
        if len(axes.get(name, ())) > 1:
            raise InputError(f"'{name}' is a list; a job has one {what}, e.g. "
                             f"'{name}: {example}'")
    return [Job(p.pop("command"), params_of(p), line)
            for p in _product(axes, "this entry")]


ONE_VALUE = {"timeout": ("timeout", "30m"), "retries": ("retry count", "2"),  # settings,
             "retry_lost": ("retry_lost setting", "true"),                      # not sweeps
             "cancel": ("cancel hook", "pkill -f '^python train.py'")}
SLOT_SETTINGS = frozenset({"slots", "allocation_policy"})  # job settings
CHECK_CACHE = 4096  # (template, names) pairs remembered as checked


def check_job(job: Job, nodes: Sequence[SubNode], cache: Optional[dict] = None) -> None:
    """Raise TemplateError unless the job renders on every sub-node."""
    _check_names(job, _node_name_sets(nodes), cache)


def checker(nodes: Sequence[SubNode]) -> Callable[[Job], None]:
    """``check_job`` for these sub-nodes: their name sets found once, checks cached."""
    name_sets, cache = _node_name_sets(nodes), {}
    largest = max(nodes, key=lambda node: node.total_slots)
    if any(node.slurm for node in nodes):  # Slurm says itself what it cannot give
        largest = replace(largest, hostname="a slurm: entry", slot_count=slurmentry.MAX_GPUS)

    def check(job: Job) -> None:
        _check_timeout(job)
        retry.check(job)
        _check_slots(job, largest)
        _check_names(job, name_sets, cache)
    return check


def _check_timeout(job: Job) -> None:
    """``timeout:`` must be a duration: a job is never taken with one that is not."""
    text = dict(job.params).get("timeout")
    if text is not None and not (parse_duration(text) or 0) > 0:
        raise InputError(f"'timeout: {text}' is not a duration; give seconds (90) or a "
                         "number with a unit: 90s, 30m, 2h, 1d")


def _check_slots(job: Job, largest: SubNode) -> None:
    """A slot request that no host could ever run is bad input."""
    if not any(name in SLOT_SETTINGS for name, _ in job.params):
        return  # most jobs: nothing to check, no dict built
    params = dict(job.params)
    try:
        slots.validate(params.get("slots", "1"), params.get("allocation_policy"),
                       (largest.hostname, largest.total_slots))
    except ValueError as err:
        hint = ("; give hosts 'slots: N' in hosts.yaml (one per GPU): a host "
                "without it has one slot" if not largest.slot_count else "")
        raise InputError(str(err) + hint) from None


def _check_names(job: Job, name_sets, cache: Optional[dict]) -> None:
    names = {k for k, _ in job.params}
    hook = dict(job.params).get("cancel") if "cancel" in names else None
    for name_set in name_sets:
        if hook is not None:  # the entry's cancel hook renders as its command does
            template.check(hook, names | name_set)
        key = (job.command, frozenset(names | name_set))
        if cache is None or key not in cache:
            template.check(job.command, key[1])
        if cache is not None:
            if len(cache) >= CHECK_CACHE:  # bounded: a 100 MB queue has millions
                cache.clear()
            cache[key] = True
        if job.params and template.calls_helpers(job.command):
            # A helper's value depends on the values: the job's own, known now (a
            # sub-node's are placeholders here, and are checked as the job renders).
            template.check(job.command, key[1], dict(job.params))


def _node_name_sets(nodes: Sequence[SubNode]) -> set:
    return {frozenset(node.context()) for node in nodes}


def render(job: Job, node: SubNode) -> str:
    return template.render(job.command, job.context_on(node))


def render_cancel(job: Job, node: SubNode) -> Optional[str]:
    """The job's cancel hook on ``node`` (the entry's ``cancel:``, else the host's),
    rendered like the command; None without one. TemplateError if it cannot render
    (a host's hook naming a parameter the job lacks)."""
    hook = dict(job.params).get("cancel", node.cancel)
    return None if hook is None else template.render(hook, job.context_on(node))


# ---------------------------------------------------------------- canonical form

def canonical_yaml(jobs: Sequence[Job], column: int = 0) -> str:
    """Queue entries (block style, one per job) that re-run exactly these jobs."""
    return entries_yaml([job.canonical() for job in jobs], column)


def entries_yaml(entries: Sequence, column: int = 0) -> str:
    """Queue entries (canonical ones, or values as read) as block-style list
    items at `column`."""
    if not entries:
        return ""
    text = yaml.dump(list(entries), Dumper=_Dumper,
                     default_flow_style=False, sort_keys=False,
                     allow_unicode=True, width=1 << 30)
    if column:
        pad = " " * column
        text = "".join(pad + line for line in text.splitlines(True))
    return text

