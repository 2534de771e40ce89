"""Read hosts.yaml into sub-nodes."""

from __future__ import annotations

from typing import List

from pegasus import expand, yamltree
from pegasus.errors import InputError
from pegasus.model import SubNode

EXAMPLE = "for example:\n- node-1\n- node-2"


def load(path: str) -> List[SubNode]:
    """The sub-nodes of a hosts file; InputError names the file and entry."""
    text = _read(path)
    _, items = yamltree.read_all(text, path)
    if not items:
        raise InputError(f"lists no hosts; add at least one, {EXAMPLE}", path)
    lines = [yamltree.entry_line(item) for item in items]
    try:
        return expand.expand_hosts([item.value for item in items], lines)
    except InputError as err:
        raise err.at(path) from None


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InputError(f"not found; create it with one host per line, {EXAMPLE}\n"
                         "(use 'localhost' to run on this machine), or give "
                         "another path with --hosts-file", path) from None
    except IsADirectoryError:
        raise InputError("is a directory; give the path of a YAML file", path) from None
    except OSError as err:
        raise InputError(f"cannot read it: {err.strerror}", path) from None
    return yamltree.decode(data, path)
