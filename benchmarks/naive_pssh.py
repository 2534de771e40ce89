"""A naive job runner on the parallel-ssh library, written the obvious way.

The peer benchmarks/compare.py holds Pegasus against: one SSH session per
slot (connect), jobs taken from a shared list (run), every line of output
written to a file with the host's name in front, exit codes collected at the
end (join). No journal, no retries, no host key check, no remote kill.

    naive_pssh.py --port P --user U --key KEY --out FILE --jobs FILE
                  [--slots N] [--broadcast] HOST...

``--broadcast``: every host runs every command (one session a host).
Exit status 0 when every job exited 0.
"""

import argparse
import sys

from gevent import joinall, spawn
from pssh.clients import SSHClient


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("hosts", nargs="+")
    ap.add_argument("--port", type=int, default=22)
    ap.add_argument("--user", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--jobs", required=True, help="one command a line")
    ap.add_argument("--out", required=True)
    ap.add_argument("--slots", type=int, default=1)
    ap.add_argument("--broadcast", action="store_true")
    args = ap.parse_args()
    with open(args.jobs) as f:
        commands = [line.rstrip("\n") for line in f if line.strip()]
    slots = [(host, n) for host in args.hosts for n in range(args.slots)]
    todo = list(reversed(commands))
    codes = []
    out = open(args.out, "w")

    def worker(host, n):
        client = SSHClient(host, port=args.port, user=args.user, pkey=args.key)
        mine = list(reversed(commands)) if args.broadcast else todo
        while mine:
            command = mine.pop()
            host_out = client.run_command(command)
            for line in host_out.stdout:
                out.write("%s %s\n" % (host, line))
            client.wait_finished(host_out)
            codes.append(host_out.exit_code)
        client.disconnect()

    greenlets = [spawn(worker, host, n) for host, n in slots]
    joinall(greenlets, raise_error=True)
    out.close()
    expected = len(commands) * (len(args.hosts) if args.broadcast else 1)
    return 0 if len(codes) == expected and not any(codes) else 1


if __name__ == "__main__":
    sys.exit(main())
