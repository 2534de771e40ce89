"""A minimal job-control shell for tests: one command as the terminal's foreground job.

Run as a session leader on a pty (``pty.fork``): it starts COMMAND in a
process group of its own and gives it the terminal, as an interactive shell
does, so Ctrl-c (``\\x03``) and Ctrl-z (``\\x1a``) typed on the pty reach the
job's foreground group. When the job stops it takes the terminal back and
prints ``[stopped]``; a line ``fg`` continues the job in the foreground. At
the job's end it prints ``[exit N]``.

Usage: python jobshell.py COMMAND [ARG...]
"""

import os
import signal
import sys

SHELL_IGNORES = (signal.SIGTTOU, signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP)


def main(argv):
    for signum in SHELL_IGNORES:
        signal.signal(signum, signal.SIG_IGN)
    tty = os.open(os.ttyname(0), os.O_RDWR)
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        os.tcsetpgrp(tty, os.getpid())
        for signum in SHELL_IGNORES:
            signal.signal(signum, signal.SIG_DFL)
        os.execvp(argv[0], argv)
    try:
        os.setpgid(pid, pid)
    except OSError:  # the child did it and has exec'd
        pass
    os.tcsetpgrp(tty, pid)
    while True:
        _, status = os.waitpid(pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            print(f"[exit {os.waitstatus_to_exitcode(status)}]", flush=True)
            return
        os.tcsetpgrp(tty, os.getpgrp())
        print("[stopped]", flush=True)
        while sys.stdin.readline().strip() != "fg":
            pass
        os.tcsetpgrp(tty, pid)
        os.killpg(pid, signal.SIGCONT)


if __name__ == "__main__":
    main(sys.argv[1:])
