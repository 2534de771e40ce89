"""The options of one Pegasus run, as parsed from the command line (``cli``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Options:
    mode: str  # "q", "b", "l" or "requeue"
    daemon: bool
    error_aborts: bool
    editor: Optional[str]
    print_period: int
    queue_file: str
    hosts_file: str
    ssh_config: Optional[str]
