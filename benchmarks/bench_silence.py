"""What the once-a-second search for hosts that stopped answering costs.

Run: python benchmarks/bench_silence.py [--sub-nodes 2000] [--calls 200]

``connecting.Hosts.silent_hosts`` runs every second while a run lasts (in
the watch greenlet, beside the heartbeats). It asks each connection how long
its host has been silent: a ``getsockopt(TCP_INFO)``. Here every sub-node's
executor answers from a real connected loopback socket of its own, as an
``SshExecutor`` does, and every host was heard from a moment ago (the common
case). Three layouts of the same number of sub-nodes: one host with every
sub-node as a slot, 20 hosts, one host a sub-node. Prints the milliseconds
one call takes (the median of ``--calls``) and the getsockopt calls it made.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pegasus import expand  # noqa: E402
from pegasus.connecting import Hosts  # noqa: E402
from pegasus.scheduler import Scheduler  # noqa: E402
from pegasus.sshclient import Client  # noqa: E402

CALLS = [0]  # getsockopt calls made


class SocketExecutor:
    """An executor whose ``silent_for`` is the real one, on a loopback socket."""

    def __init__(self, sock):
        self.sock = sock
        self._proxy_client = None

    def silent_for(self):
        CALLS[0] += 1
        return Client.silent_for(self)


class Quiet:
    def message(self, text):
        pass

    def output_held_since(self, moment):
        return False


def connected_pairs(count):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    pairs = []
    for _ in range(count):
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        server.sendall(b"x")  # heard from just now
        pairs.append((client, server))
    listener.close()
    return pairs


def layout(hosts, sub_nodes):
    per_host = sub_nodes // hosts
    return expand.expand_hosts([{"hostname": "host-%d" % h, "slot": [str(i) for i in range(per_host)]}
                                for h in range(hosts)])


def measure(hosts, sub_nodes, calls, pairs):
    nodes = layout(hosts, sub_nodes)
    executors = {node: SocketExecutor(pair[0]) for node, pair in zip(nodes, pairs)}
    watched = Hosts(nodes, executors, {}, [], None, Scheduler(nodes), Quiet(), lambda e: None)
    times = []
    CALLS[0] = 0
    for _ in range(calls):
        start = time.perf_counter()
        found = watched.silent_hosts()
        times.append(time.perf_counter() - start)
        assert found == [], found
    return statistics.median(times) * 1000, CALLS[0] / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sub-nodes", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    pairs = connected_pairs(args.sub_nodes)
    print("%d sub-nodes, median of %d calls of Hosts.silent_hosts()" % (args.sub_nodes,
                                                                       args.calls))
    for hosts in (1, 20, args.sub_nodes):
        ms, getsockopts = measure(hosts, args.sub_nodes, args.calls, pairs)
        print("  %5d host(s) x %4d sub-nodes: %7.3f ms a call, %6.0f getsockopt a call"
              % (hosts, args.sub_nodes // hosts, ms, getsockopts))
    for pair in pairs:
        for sock in pair:
            sock.close()


if __name__ == "__main__":
    main()
