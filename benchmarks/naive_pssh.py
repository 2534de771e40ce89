"""A naive job runner on the parallel-ssh library, written the obvious way.

The peer benchmarks/compare.py holds Pegasus against: one SSH session per
slot (connect), jobs taken from a shared list (run), every line of output
written to a file with the host's name in front, exit codes collected at the
end (join). No journal, no retries, no host key check, no remote kill.

    naive_pssh.py --port P --user U --key KEY --out FILE --jobs FILE
                  [--slots N] [--broadcast] HOST...

``--broadcast``: every host runs every command (one session a host).
``--shell``: each slot starts one long-lived remote shell and sends it the
commands one after the other (``SHELL_LOOP``; one line a command) instead of
a new channel a job: what a runner with a long-lived shell per sub-node could
reach, no process group of its own a job, no kill, no orphan clock.
Exit status 0 when every job exited 0.
"""

import argparse
import sys

from gevent import joinall, spawn
from pssh.clients import SSHClient


END = "=naive-end= "
SHELL_LOOP = ('while IFS= read -r c; do sh -c "$c" </dev/null; echo "%s$?"; done' % END)


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
    ap.add_argument("--shell", action="store_true", help="one long-lived shell a slot")
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

    def shell_worker(host, n):
        client = SSHClient(host, port=args.port, user=args.user, pkey=args.key)
        host_out = client.run_command(SHELL_LOOP)
        lines = iter(host_out.stdout)
        while todo:
            host_out.stdin.write(todo.pop() + "\n")
            host_out.stdin.flush()
            for line in lines:
                if line.startswith(END):
                    codes.append(int(line[len(END):]))
                    break
                out.write("%s %s\n" % (host, line))
        client.eagain(host_out.channel.send_eof)  # the loop reads EOF and ends
        client.wait_finished(host_out)
        client.disconnect()

    greenlets = [spawn(shell_worker if args.shell else worker, host, n) for host, n in slots]
    joinall(greenlets, raise_error=True)
    out.close()
    expected = len(commands) * (len(args.hosts) if args.broadcast else 1)
    return 0 if len(codes) == expected and not any(codes) else 1


if __name__ == "__main__":
    sys.exit(main())
