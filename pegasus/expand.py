"""Cartesian expansion of hosts.yaml and queue.yaml entries; canonical form.

Pure functions from plain values (as ``yamltree`` reads them) to ``SubNode``
and ``Job`` values, and back from jobs to YAML text. No file I/O.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import yaml

from pegasus import template
from pegasus.errors import InputError
from pegasus.model import Job, SubNode, params_of

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
    """Sub-nodes of hosts.yaml entries, in file order. ``lines`` are 1-based."""
    nodes: List[SubNode] = []
    for i, entry in enumerate(entries):
        line = lines[i] if i < len(lines) else None
        try:
            nodes.extend(_host_entry(entry, len(nodes)))
        except InputError as err:
            raise err.at(line=line, entry=i + 1) from None
    if not nodes:
        raise InputError("lists no hosts; add at least one, e.g. '- localhost'")
    return nodes


def _host_entry(entry, first_index: int) -> List[SubNode]:
    if isinstance(entry, str):
        return [SubNode(first_index, _hostname(entry))]
    if not isinstance(entry, dict):
        raise InputError("a host entry must be a hostname or a mapping with a "
                         "'hostname' key")
    if "hostname" not in entry:
        raise InputError("this host entry has no 'hostname' key; add one "
                         "(e.g. 'hostname: node-1')")
    axes = {name: _values(name, raw, "host entry") for name, raw in entry.items()}
    nodes = []
    for point in _product(axes, "this host entry"):
        params = {k: v for k, v in point.items() if k != "hostname"}
        name = _render_hostname(point["hostname"], params)
        nodes.append(SubNode(first_index + len(nodes), name, params_of(params)))
    return nodes


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
    return [Job(p.pop("command"), params_of(p), line)
            for p in _product(axes, "this entry")]


CHECK_CACHE = 4096  # (template, names) pairs remembered as checked


def check_job(job: Job, nodes: Sequence[SubNode], cache: Optional[dict] = None) -> None:
    """Raise TemplateError unless the job renders on every sub-node."""
    _check_names(job, _node_name_sets(nodes), cache)


def checker(nodes: Sequence[SubNode]) -> Callable[[Job], None]:
    """``check_job`` for these sub-nodes: their name sets found once, checks cached."""
    name_sets, cache = _node_name_sets(nodes), {}
    return lambda job: _check_names(job, name_sets, cache)


def _check_names(job: Job, name_sets, cache: Optional[dict]) -> None:
    names = {k for k, _ in job.params}
    for name_set in name_sets:
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

