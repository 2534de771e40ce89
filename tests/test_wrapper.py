"""The remote job wrapper (pegasus/wrapper.sh), run as sshd runs it.

sshd starts each session's login shell as the leader of a new session; here
each shell of the sh family found on this machine runs the exec string the
same way (``start_new_session``), with a pipe as the channel's stdin that stays
open until the test closes it, as Pegasus does to cancel. The same wrapper over
real SSH is exercised by test_cancel.py, test_failing_hosts.py and the rest;
the last tests here run it through the SSH test cluster itself. The tests
that wait seconds run the wrappers of every shell side by side (``SideBySide``).
"""
import fcntl
import os
import shutil
import signal
import subprocess
import struct
import sys
import termios
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest

from pegasus import executor, ssh, sshclient, sshconfig, wrapper

import helpers

SHELLS = [s for s in sorted(wrapper.POSIX_LOGIN_SHELLS) if shutil.which(s)]

wait_for = partial(helpers.wait_for, timeout=15.0)  # this file's default timeout
# The cancel tests' TERM-to-KILL delay (Pegasus's is executor.KILL_AFTER, 3 s):
# the same steps, TERM, then 1 s later the USR1 that makes a wrapper whose job
# ignored TERM say 137, then KILL; 1 s sooner.
KILL_AFTER = 2


def start(shell, command, posix=True, silence=executor.ORPHAN_TIMEOUT,
          kill_after=executor.KILL_AFTER, tick=None):
    """The wrapper, started before its command is known, then sent it."""
    proc = waiting(shell, posix, silence, kill_after, tick)
    proc.stdin.write(wrapper.command_input(command, proc.nonce))
    proc.stdin.flush()
    return proc


def waiting(shell, posix=True, silence=executor.ORPHAN_TIMEOUT,
            kill_after=executor.KILL_AFTER, tick=None):
    nonce = wrapper.new_nonce()
    exec_string = wrapper.shell_command(nonce, posix, silence, kill_after, tick)
    proc = subprocess.Popen([shell, "-c", exec_string],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    proc.nonce = nonce
    return proc


def finish(proc, timeout=30):
    """Read until the job's streams end, then its status; stdin stays as it is
    until then (open: as Pegasus keeps it; closed: a cancel)."""
    stdin, proc.stdin = proc.stdin, None  # communicate() must not close it
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stdin.close()
    return proc.wait(timeout=timeout), out.decode(), err.decode()


def run(shell, command, posix=True):
    return finish(start(shell, command, posix))


class SideBySide:
    """``fn(shell)`` for every shell at once, in threads started with the module's
    first test (``_side_by_side``), or by the first test that asks for one; each
    test then gets its own shell's result (or exception). For the tests that wait
    seconds (a silence, a TERM-to-KILL delay, a clock's last tick): the waits
    overlap each other and the rest of the module."""

    every = []  # in this module

    def __init__(self, fn):
        self.fn, self.futures = fn, None
        SideBySide.every.append(self)

    def start(self):
        if self.futures is None:
            pool = ThreadPoolExecutor(len(SHELLS))
            self.futures = {each: pool.submit(self.fn, each) for each in SHELLS}
            pool.shutdown(wait=False)

    def __call__(self, shell):
        self.start()
        return self.futures[shell].result(timeout=60)

    def wait(self):
        for future in (self.futures or {}).values():
            future.exception(timeout=60)  # its test reports it


@pytest.fixture(scope="module", autouse=True)
def _side_by_side():
    """Every SideBySide of the module starts at once; none outlives the module."""
    for each in SideBySide.every:
        each.start()
    yield
    for each in SideBySide.every:
        each.wait()


def reference(command):
    """What ``sh -c command`` gives on its own."""
    done = subprocess.run(["sh", "-c", command], capture_output=True, stdin=subprocess.DEVNULL)
    status = done.returncode if done.returncode >= 0 else 128 - done.returncode  # as sh says
    return status, done.stdout.decode(), done.stderr.decode()


def alive(tag):
    """Processes whose command line holds ``tag``."""
    found = subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


TRICKY = [
    "true",
    "exit 3",
    'echo "$0 $#"',
    "printf '%s\\n' \"a'b\" 'c\"d' '$HOME' 'back\\slash'",
    "echo one\necho two",
    "echo to-stderr >&2; exit 7",
    "no-such-command-xyz",
    "if then",
    "kill -KILL $$",
    "kill -TERM $$; echo not-reached",
    "read line; echo \"read: $line\"",
]


@pytest.mark.skipif(not SHELLS, reason="no sh-family shell here")
@pytest.mark.parametrize("posix", [True, False], ids=["login-shell-runs-it", "exec-sh"])
@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("command", TRICKY, ids=range(len(TRICKY)))
def test_runs_exactly_as_sh_c(shell, posix, command):
    assert run(shell, command, posix) == reference(command)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("sent", ["nothing", "a command without its nonce line",
                                  "a command and a wrong nonce"])
def test_a_wrapper_whose_channel_ends_before_the_nonce_runs_nothing(shell, sent, tmp_path):
    proof = tmp_path / "ran"
    command = "echo ran > %s" % proof
    proc = waiting(shell)
    if sent != "nothing":
        proc.stdin.write(command.encode() + b"\n")
        if sent == "a command and a wrong nonce":
            proc.stdin.write(wrapper.new_nonce().encode() + b"\n")
    proc.stdin.close()  # Pegasus died or closed the connection
    assert finish(proc) == (0, "", "")
    assert not proof.exists()


def cancelled_as_it_starts(shell, _):
    """The command and its nonce, then at once the end of the channel: the
    watchdog's TERM comes while the job's shell is being started."""
    proc = start(shell, "sleep 300", kill_after=KILL_AFTER)
    proc.stdin.close()
    try:
        return finish(proc)[0]
    finally:
        _kill_group(proc.pid)


@pytest.mark.parametrize("shell", SHELLS)
def test_a_cancel_as_the_job_starts_terminates_it_with_term(shell):
    # A shell just forked keeps its parent's TERM handler for a moment: a TERM
    # then was lost, and the job died of the KILL 3 s later (137, a third of
    # the time with dash).
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(partial(cancelled_as_it_starts, shell), range(16)))
    assert statuses == [128 + signal.SIGTERM] * 16


def test_the_command_arrives_byte_for_byte():
    for command in TRICKY + ["", "\n", "a\n\nb\n", "  lead and trail  ", "tab\there\r"]:
        data = wrapper.command_input(command, "NONCE")
        assert data.endswith(b"\nNONCE\n")
        assert data[:-len(b"\nNONCE\n")].decode() == command


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("command", ["printf '%s|' \"$(cat <<EOF\n  x  \n\nEOF\n)\"",
                                     "echo a\n\necho b\n", "echo 'end with a backslash' \\"],
                         ids=["heredoc", "blank-lines", "backslash"])
def test_multi_line_commands_keep_every_byte(shell, command):
    assert run(shell, command) == reference(command)


@pytest.mark.parametrize("shell", SHELLS)
def test_the_wrapper_never_adds_words_to_the_job_s_stderr(shell):
    """Shells print "Killed" notices for background jobs when they like;
    bash did so in about 1 run in 12 before the wrapper's own stderr went to
    /dev/null. Many runs, so that a notice has its chances."""
    for _ in range(25):
        assert run(shell, "kill -KILL $$") == (137, "", "")
        assert run(shell, "kill -TERM $$") == (143, "", "")


def cancel(shell, command):
    """Start ``command``, wait for its ``sleep 300``, close stdin as Pegasus
    cancels; return the wrapper's status once every process of the group is gone
    (``KILL_AFTER`` s later)."""
    proc = start(shell, command, kill_after=KILL_AFTER)
    try:
        # the sleep itself, not the job's shell (whose command line holds "sleep
        # 300" before it ran the trap: a TERM then killed it, 143 for 137)
        wait_for(lambda: any(_cmdline(p).split() == ["sleep", "300"] for p in _group(proc.pid)),
                 what="the job to start")
        members = _group(proc.pid)
        proc.stdin.close()
        status, _, _ = finish(proc)
        wait_for(lambda: not any(_exists(p) for p in members), what="the group to die")
        return status
    finally:
        _kill_group(proc.pid)


cancelled = SideBySide(lambda shell: cancel(shell, "sleep 300 & sleep 301"))
cancelled_term_deaf = SideBySide(lambda shell: cancel(shell, "trap '' TERM; sleep 300"))


@pytest.mark.slow
@pytest.mark.parametrize("shell", SHELLS)
def test_closing_stdin_terminates_the_job_and_its_children(shell):
    assert cancelled(shell) == 128 + signal.SIGTERM


@pytest.mark.slow
@pytest.mark.parametrize("shell", SHELLS)
def test_a_job_that_ignores_term_is_killed_and_reported_as_killed(shell):
    assert cancelled_term_deaf(shell) == 128 + signal.SIGKILL


@pytest.mark.parametrize("shell", SHELLS)
def test_a_finished_job_leaves_its_background_processes_alone(shell):
    tag = "pgw-%s" % uuid.uuid4().hex
    proc = start(shell, "(sleep 300; : %s) >/dev/null 2>&1 </dev/null & echo started" % tag)
    try:
        status, out, _ = finish(proc)
        assert (status, out) == (0, "started\n")
        survivors = alive(tag)
        assert survivors, "the background process was not started"
        # the watchdog sees end-of-file once the session is over; the
        # background process must outlive it (as with plain ssh)
        wait_for(lambda: not any(_is_watchdog(p) for p in _group(proc.pid)),
                 what="the watchdog to leave")
        assert all(_exists(p) for p in survivors)
    finally:
        _kill_group(proc.pid)  # the subshell and its sleep, which has no tag


def test_only_other_login_shells_exec_sh():
    assert wrapper.shell_command("N", True).startswith("exec 3<&0")
    assert wrapper.shell_command("N", False).startswith("exec sh -c 'exec 3<&0")


def test_the_script_sent_is_wrapper_sh_without_its_comments():
    path = os.path.join(os.path.dirname(wrapper.__file__), "wrapper.sh")
    with open(path, encoding="utf-8") as f:
        code_lines = [ln for ln in f.read().splitlines() if ln.strip() and
                      not ln.lstrip().startswith("#")]
    sent = wrapper.script(600)
    assert "#" not in sent  # wrapper.sh's code has no "#": every one was a comment
    assert len(sent.splitlines()) == len(code_lines)  # and no line of code was lost
    assert sent.count(wrapper.NONCE) == 1 and "{SILENCE}" not in sent
    assert 'while [ "$n" -lt 120 ]; do sleep 5;' in sent and "{ORPHANED}" not in sent
    assert "read -r -t 600 _ <&3" in sent  # bash's clock: the orphan timeout itself
    assert "sleep %d;" % (executor.KILL_AFTER - 1) in sent
    assert "sleep 1;" in wrapper.script(600, kill_after=2)  # the tests' shorter delay
    assert 'while [ "$n" -lt 787 ]; do sleep 1;' in wrapper.script(787, tick=1)  # and tick
    assert wrapper.script(600) is sent  # read once, not for every job


HASHES = [
    "#!/bin/sh",
    "  # an indented comment",
    "",
    "echo \"a # b\" 'c # d' x#y \\# e  # a comment",
    "x=abc; echo ${#x} $# \"a \\\" # b\"\t# after a tab",
    "s='",
    "# inside a quote: kept, and so is the blank line below",
    "",
    "'  # the quote ends",
    "echo \"$s\" \"it's\" # mixed quotes",
    "echo 'say \"hi\" # not' \"#\"",
]


def test_a_hash_in_the_code_is_not_a_comment():
    stripped = list(wrapper.strip_comments(HASHES))
    assert stripped == [
        "echo \"a # b\" 'c # d' x#y \\# e",
        "x=abc; echo ${#x} $# \"a \\\" # b\"",
        "s='",
        "# inside a quote: kept, and so is the blank line below",
        "",
        "'",
        "echo \"$s\" \"it's\"",
        "echo 'say \"hi\" # not' \"#\"",
    ]
    said = [subprocess.run(["sh", "-c", "\n".join(lines)], capture_output=True, text=True,
                           check=True).stdout for lines in (HASHES, stripped)]
    assert said[0] == said[1]  # sh reads both the same


def test_a_misspelt_placeholder_is_refused():
    assert wrapper.prepare("sleep {KILL_AFTER - 1}  # s\n[ x = {nonce} ]\necho ${HOME}\n") == \
        "sleep %d\n[ x = {nonce} ]\necho ${HOME}\n" % (executor.KILL_AFTER - 1)
    with pytest.raises(ValueError, match="SILENSE"):
        wrapper.prepare("sleep {SILENSE}\n")


def test_connection_errors_do_not_show_parallel_ssh_s_own_try_count():
    """Pegasus goes on retrying a host: "retry 1/1" from parallel-ssh misleads."""
    from pssh.exceptions import UnknownHostError
    err = UnknownHostError("Unknown host %s - %s - retry %s/%s", "nosuch.invalid",
                           "Name or service not known", 1, 1)
    assert sshclient.words(err) == "Unknown host nosuch.invalid - Name or service not known"


def test_the_login_shell_probe_says_which_shells_run_the_wrapper():
    says = ssh._says_posix_login_shell
    assert says(0, b"/bin/sh\n")
    assert says(0, b"/usr/bin/bash\n")
    assert not says(0, b"/usr/bin/fish\n")
    assert not says(0, b"/bin/tcsh\n")
    assert not says(0, b"Welcome!\n/bin/sh\n")  # a chatty .bashrc: be safe
    assert not says(1, b"/bin/sh\n")
    assert not says(0, b"")


# ---------------------------------------------------------------- over SSH

@pytest.fixture
def node_1(cluster):
    ex = ssh.connect(sshconfig.resolve("node-1", cluster.ssh_config))
    yield ex
    ex.close()


def test_the_test_user_login_shell_runs_the_wrapper_itself(node_1):
    assert node_1.posix_login_shell is True  # its shell is /bin/sh


def test_a_long_command_of_many_lines_over_ssh(node_1):
    """The command travels on the channel's stdin, in many SSH packets (it must
    stay under Linux's 128 KiB for one exec argument: it becomes sh -c's)."""
    filler = ": " + "x" * 40_000
    lines = ["echo line-%d" % i for i in range(2000)]
    command = "\n".join([filler] + lines + [filler, "echo done"])
    out = []
    status = node_1.run(command, lambda stream, data: out.append((stream, data)))
    said = b"".join(d for s, d in out if s == "stdout").decode().splitlines()
    assert (status, said) == (0, ["line-%d" % i for i in range(2000)] + ["done"])


@pytest.mark.parametrize("posix", [True, False], ids=["login-shell-runs-it", "exec-sh"])
def test_both_exec_strings_over_ssh(cluster, posix):
    target = sshconfig.resolve("node-1", cluster.ssh_config)
    ex = ssh.SshExecutor(sshclient.open_client(target), posix_login_shell=posix)
    try:
        for _ in range(2):  # the first wrapper is started at once, the next after a job
            out = []
            status = ex.run('echo "$0 $#"; kill -KILL $$',
                            lambda stream, data: out.append((stream, data)))
            assert (status, out) == (137, [("stdout", b"sh 0\n")])
    finally:
        ex.close()


# ---------------------------------------------------------------- helpers

def _group(pgid):
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.getpgid(int(name)) == pgid:
                    members.append(int(name))
            except ProcessLookupError:
                pass
    return members


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_watchdog(pid):
    return "read -r _" in _cmdline(pid)


def _exists(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


# ---------------------------------------------------------------- silence (issue 10)

def group_processes(pgid):
    """The processes still in a process group (the wrapper's session)."""
    out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout
    return out.split()


# stdin stays open and silent
orphaned = SideBySide(lambda shell: finish(start(shell, "echo started; sleep 300", silence=1),
                                           timeout=30))


@pytest.mark.parametrize("shell", SHELLS)
def test_silence_past_the_orphan_timeout_stops_the_job_and_says_so(shell):
    """No line for ``silence`` seconds: the job is stopped and the wrapper reports
    ORPHANED (not a signal), so Pegasus can tell a watchdog's stop from a kill."""
    status, out, _ = orphaned(shell)
    assert out == "started\n"
    assert status == executor.ORPHANED


def heartbeats(shell):
    """A job that ends once 20 heartbeats were sent: its status and output, once
    nothing of its wrapper is left (its clock ticks every second, not 5 s: the
    last tick of every clock restarted is then 1 s, not 5)."""
    marker = "/tmp/pegasus-test-%s" % wrapper.new_nonce()
    proc = start(shell, "while [ ! -e %s ]; do sleep 0.05; done; echo done" % marker,
                 silence=787, tick=1)
    for _ in range(20):  # heartbeats, in a burst
        proc.stdin.write(b"\n")
        proc.stdin.flush()
    open(marker, "w").close()
    try:
        status, out, _ = finish(proc, timeout=30)
    finally:
        os.unlink(marker)
    wait_for(lambda: not group_processes(proc.pid), timeout=20,
             what="the wrapper's clocks to be gone")
    return status, out


heartbeaten = SideBySide(heartbeats)


@pytest.mark.parametrize("shell", SHELLS)
def test_heartbeats_keep_a_job_alive_and_leave_nothing_behind(shell):
    """Each heartbeat restarts the watchdog's clock; a restarted clock leaves at most a
    short tick behind, so nothing of the wrapper outlives the job for long (a clock of
    one long sleep left a `sleep 787` per restart, for 13 minutes)."""
    assert heartbeaten(shell) == (0, "done\n")


def _children(pid):
    """The pids whose parent is ``pid`` (zombies too)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(name))
            except (OSError, ValueError, IndexError):
                pass
    return found


def _unread(pipe):
    """Bytes written to ``pipe`` that its reader has not read yet."""
    return struct.unpack("i", fcntl.ioctl(pipe.fileno(), termios.FIONREAD, b"\0" * 4))[0]


@pytest.mark.skipif(not shutil.which("bash"), reason="no bash here")
def test_bash_keeps_the_orphan_clock_without_a_process():
    """bash's ``read -t`` is the silence clock: while a job runs, its watchdog (the
    wrapper's child that reads the channel) starts nothing, where a clock cost a
    subshell and a ``sleep`` started for every job. Once the watchdog has read a
    heartbeat, it is in its reading loop, past where a clock would have started."""
    proc = start("bash", "sleep 300")
    try:
        channel = "pipe:[%d]" % os.fstat(proc.stdin.fileno()).st_ino
        proc.stdin.write(b"\n")  # a heartbeat
        proc.stdin.flush()
        wait_for(lambda: _unread(proc.stdin) == 0, what="the watchdog to read the heartbeat")
        watchdog = wait_for(lambda: [p for p in _children(proc.pid) if _fd(p, 3) == channel],
                            what="the watchdog")
        assert len(watchdog) == 1 and _children(watchdog[0]) == []
    finally:
        _kill_group(proc.pid)
        proc.stdin.close()
        proc.wait(timeout=30)


def _fd(pid, fd):
    try:
        return os.readlink("/proc/%d/fd/%d" % (pid, fd))
    except OSError:
        return None


def heartbeat_as_it_gives_up(shell):
    """The orphan timeout passes; in the second the watchdog gives the wrapper
    to take note (its ``sleep 1``, before TERM), Pegasus is back: a heartbeat
    every half second from then on. The wrapper's status, or None if it ran on."""
    proc = start(shell, "sleep 300", silence=2, tick=2, kill_after=KILL_AFTER)
    try:
        wait_for(lambda: any(_cmdline(p).split() == ["sleep", "1"] for p in _group(proc.pid)),
                 interval=0.01, what="the watchdog to give up")  # within its second
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                proc.stdin.write(b"\n")
                proc.stdin.flush()
            except BrokenPipeError:  # the group was killed: no reader is left
                return proc.wait(timeout=5)
            time.sleep(0.5)  # the heartbeats' pace, not a wait for a condition
        return proc.poll()  # None: the job ran on under the heartbeats
    finally:
        _kill_group(proc.pid)
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass


@pytest.mark.slow
@pytest.mark.parametrize("shell", SHELLS)
def test_a_heartbeat_after_the_orphan_timeout_does_not_call_off_the_stop(shell):
    """Too late: the job is stopped and said ORPHANED all the same. Such a
    heartbeat once killed the clock's subshell in that second: the wrapper had
    been told ORPHANED, the job ran on, and its end would be said to be the
    node's stop."""
    assert heartbeat_as_it_gives_up(shell) == executor.ORPHANED


# 3 s without a single heartbeat
outlived = SideBySide(lambda shell: finish(start(shell, "sleep 3; echo still here", silence=60),
                                           timeout=30))


@pytest.mark.slow
@pytest.mark.parametrize("shell", SHELLS)
def test_a_job_outlives_a_silence_shorter_than_the_orphan_timeout(shell):
    """Pegasus paused (Ctrl-z, a stalled stdout) for a while: nothing happens."""
    status, out, _ = outlived(shell)
    assert (status, out) == (0, "still here\n")
