"""Throughput of the job-output path, as job.run_job takes it: LineSplitter.feed_block
-> Sink.block for chunks of whole lines, else LineSplitter.feed -> Sink.lines.

Run: python benchmarks/bench_output.py  (writes to /dev/null, prints MB/s)
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pegasus.model import SubNode  # noqa: E402
from pegasus.lines import LineSplitter  # noqa: E402
from pegasus.output import Sink  # noqa: E402

SIZE = 50 * 1024 * 1024
CHUNK = 32 * 1024


def run(name: str, data: bytes, color: bool, width) -> None:
    node = SubNode(1, "node-1", (("container", "gpu0"),))
    with open(os.devnull, "wb") as devnull:
        sink = Sink(devnull, color=color, width=width)
        splitter = LineSplitter()
        start = time.perf_counter()
        for i in range(0, len(data), CHUNK):
            chunk = data[i:i + CHUNK]
            block = splitter.feed_block(chunk)
            if block is not None:
                if block:
                    sink.block(node, "stdout", block)
                continue
            lines = splitter.feed(chunk)
            if lines:
                sink.lines(node, "stdout", lines)
        sink.lines(node, "stdout", splitter.close())
        elapsed = time.perf_counter() - start
    mb = len(data) / 1e6
    print(f"{name:<44} {mb / elapsed:8.0f} MB/s  ({elapsed:.3f} s)")


def main() -> None:
    lines = (b"x" * 99 + b"\n") * (SIZE // 100)
    flat = b"y" * SIZE
    run("pipe, 100-byte lines", lines, False, None)
    run("pipe, no newline at all", flat, False, None)
    run("terminal (color, width 120), 100-byte lines", lines, True, 120)
    run("terminal (color, width 120), no newline", flat, True, 120)


if __name__ == "__main__":
    main()
