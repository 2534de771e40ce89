"""The template check and rendering of a parametrized queue, in CPU seconds.

Run: python benchmarks/bench_templates.py [--entries 100000] [--distinct]

Writes a queue of ``--entries`` entries ``- command: python train.py --lr
{{lr}} --tag {{shq tag}}`` (each with its own ``lr`` and ``tag``: one
template; with ``--distinct`` a ``--seed N`` in each command makes every
template different) in a scratch folder, then measures the start-up check
(``QueueFile.check_all`` with ``expand.checker`` of one ``localhost``
sub-node) and what the takes do for every job: the check of the head entry
and ``expand.render``. CPU time (``time.process_time``), so that a loaded
machine changes the figures less.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pegasus import expand, template, yamltree  # noqa: E402
from pegasus.model import SubNode  # noqa: E402
from pegasus.queuefile import QueueFile  # noqa: E402


def write_queue(path: str, entries: int, distinct: bool) -> None:
    with open(path, "w") as f:
        for i in range(entries):
            seed = f" --seed {i}" if distinct else ""
            f.write(f"- command: python train.py{seed} --lr {{{{lr}}}} --tag {{{{shq tag}}}}\n"
                    f"  lr: '0.{i}'\n  tag: run-{i}\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--distinct", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "queue.yaml")
        write_queue(path, args.entries, args.distinct)
        node = SubNode(0, "localhost")
        check = expand.checker([node])
        template.check("{{x}}", {"x"})  # pybars' grammar is built once (~0.3 s)
        start = time.process_time()
        QueueFile(path).check_all(check)
        checked = time.process_time() - start
        start = time.process_time()
        with open(path, "rb") as f:
            for item in yamltree.read_list(yamltree.TextStream(f, path), path)[1]:
                for job in expand.expand_entry(item.value):
                    check(job)  # a take checks the head entry again
                    expand.render(job, node)
        taken = time.process_time() - start
    kind = "distinct templates" if args.distinct else "one template"
    print(f"{args.entries} entries, {kind}: start-up check {checked:.2f} s CPU; "
          f"take checks + renders {taken:.2f} s CPU ({taken / args.entries * 1e6:.0f} us a job)")


if __name__ == "__main__":
    main()
