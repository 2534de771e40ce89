"""A throw-away cluster of real OpenSSH servers on loopback addresses.

Plain Python (no pytest import), so both the pytest fixtures in
``tests/conftest.py`` and benchmark scripts can use it::

    from tests.cluster import Cluster

    with Cluster("/tmp/some-dir", n_hosts=4) as cluster:
        print(cluster.ssh_config, cluster.aliases)
        cluster.ssh("node-1", "id -un")

Each node is its own ``sshd -D -e`` process listening on
``127.0.<net>.<first_ip + i>:<port>`` (every node uses the same port; net is
PEGASUS_TEST_NET, default 0), with its
own ed25519 host key.  All nodes accept the same client key for the
``pegasus-test`` user.  Everything lives in ``workdir``:

    workdir/
        ssh_config          client config: aliases node-1 .. node-N
        known_hosts         UserKnownHostsFile of ssh_config (starts empty)
        client_key(.pub)    client identity; the .pub is authorized_keys
        authorized_keys
        scratch/            directory writable by the test user
        node-K/             sshd_config, host key, sshd.pid, sshd.log

The sshd listeners get SIGTERM if the thread that called start() exits
(PR_SET_PDEATHSIG), so a crashed test run leaves no listener behind; start the
cluster from the main thread (or one that outlives it).

Requirements: Linux, root (to run sshd and create the test user) and
``/usr/sbin/sshd``.  Otherwise :class:`ClusterUnavailable` is raised with the
reason.

External cluster: when ``PEGASUS_TEST_SSH_CONFIG`` (path of an ssh_config)
and ``PEGASUS_TEST_NODES`` (comma-separated aliases) are set,
:meth:`Cluster.external` returns an :class:`ExternalCluster` with the same
``ssh_config`` / ``aliases`` / ``ssh()`` interface whose start/stop do
nothing.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Dict, List, Optional, Sequence

__all__ = [
    "Cluster",
    "ClusterUnavailable",
    "ExternalCluster",
    "cluster_from_env",
    "SHARED_SSHD_CONFIG",
    "TEST_USER",
    "FIRST_IP",
    "NET",
]

# A suite's address range starts at PEGASUS_TEST_FIRST_IP (default 11); each
# pytest-xdist worker (gw0, gw1, ...) takes the next WORKER_SPAN addresses of it.
WORKER_SPAN = 20
# Within a range: the session cluster (4 nodes), then clusters tests start of their own.
OFFSET_FAILING = 4   # tests/test_failing_hosts.py: 2 nodes
OFFSET_PRIVATE = 6   # tests/test_cluster.py: 2 nodes
OFFSET_SELECT = 14   # tests/test_selection_cluster.py: 4 nodes (14-17)


def _first_ip() -> int:
    base = int(os.environ.get("PEGASUS_TEST_FIRST_IP", "11"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return base + WORKER_SPAN * int(worker[2:] if worker.startswith("gw") else 0)


FIRST_IP = _first_ip()
# PEGASUS_TEST_NET (default 0): the third byte of the addresses, 127.0.<net>.<ip>,
# so suites and benchmarks run at the same time can each have 250 addresses.
NET = int(os.environ.get("PEGASUS_TEST_NET", "0"))
# Each range (two suites at once, each worker of a suite) gets its own user, so
# one emptying its user's home at start never deletes another's files.
TEST_USER = "pegasus-test" + ("" if NET == 0 else "-n%d" % NET) + (
    "" if FIRST_IP == 11 else "-%d" % FIRST_IP)
# The test user's login shell; PEGASUS_TEST_SHELL=/bin/bash measures the wrapper as bash runs it.
TEST_SHELL = os.environ.get("PEGASUS_TEST_SHELL", "/bin/sh")
SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = "/run/sshd"
SHARED_SSHD_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sshd_config")
PORT_RANGE = (20000, 30000)

ENV_SSH_CONFIG = "PEGASUS_TEST_SSH_CONFIG"
ENV_NODES = "PEGASUS_TEST_NODES"
ENV_USER = "PEGASUS_TEST_USER"


class ClusterUnavailable(RuntimeError):
    """This machine cannot run a local sshd cluster (the message says why)."""


class ClusterError(RuntimeError):
    """A node failed to start or to answer in time."""


# --------------------------------------------------------------------------
# small helpers

def _run(cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 60)
    return subprocess.run(list(cmd), **kw)


def _check(cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
    res = _run(cmd, **kw)
    if res.returncode != 0:
        raise ClusterError(
            "command failed (exit %s): %s\n%s%s"
            % (res.returncode, " ".join(cmd), res.stdout or "", res.stderr or "")
        )
    return res


def _port_free(ips: Sequence[str], port: int) -> bool:
    for ip in ips:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((ip, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def _banner(ip: str, port: int, timeout: float) -> bool:
    """True once something on ip:port accepts and sends an SSH banner."""
    try:
        with socket.create_connection((ip, port), timeout=timeout) as s:
            s.settimeout(timeout)
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"SSH-")
    except OSError:
        return False


def _tail(path: str, n: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def _sshd_preexec():
    """What a listener runs between fork and exec (get it just before the fork):
    if the Python process that started the cluster dies without calling stop()
    (SIGKILL, crash), the kernel sends SIGTERM to the listener."""
    from pegasus import parentdeath  # not at import: conftest imports no pegasus module

    return parentdeath.arm()


def _proc_table() -> Dict[int, int]:
    """pid -> ppid for every process (Linux /proc)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                stat = f.read()
            # comm may contain spaces or parentheses: split at the last ')'
            fields = stat[stat.rindex(b")") + 2:].split()
            if fields[0] == b"Z":
                continue  # zombie: already dead
            table[int(name)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    return table


def _descendants(root: int, table: Dict[int, int]) -> List[int]:
    children: Dict[int, List[int]] = {}
    for pid, ppid in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), ()):
            out.append(c)
            todo.append(c)
    return out


def _session_pids(ip: str, port: int, uid: Optional[int], table: Dict[int, int]) -> List[int]:
    """Processes started by a session on ip:port, even if they daemonized.

    sshd puts ``SSH_CONNECTION=<client ip> <client port> <server ip> <port>``
    into every session's environment; it survives double forks.
    """
    want = ("%s %d" % (ip, port)).encode()
    out = []
    for pid in table:
        if uid is not None:
            try:
                if os.stat("/proc/%d" % pid).st_uid != uid:
                    continue
            except OSError:
                continue
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                env = f.read()
        except OSError:
            continue
        for var in env.split(b"\0"):
            if var.startswith(b"SSH_CONNECTION=") and var.endswith(b" " + want):
                out.append(pid)
                break
    return out


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:][:1] != b"Z"
    except (OSError, ValueError):
        return False


def ensure_test_user(name: str = TEST_USER) -> pwd.struct_passwd:
    """Create the key-only test user if missing (idempotent, race tolerant)."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        skel = tempfile.mkdtemp(prefix="pegasus-skel-")  # empty: no dotfiles
        try:
            res = _run(["useradd", "-m", "-k", skel, "-s", TEST_SHELL, name])
        finally:
            os.rmdir(skel)
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise ClusterUnavailable(
                "could not create test user %s: %s" % (name, (res.stderr or "").strip())
            )
    if pw.pw_shell != TEST_SHELL:
        _check(["usermod", "-s", TEST_SHELL, name])
    # With `UsePAM no`, sshd refuses accounts whose password is locked ("!"),
    # even for public key logins.  "*" means "no password, not locked".
    if _shadow_password(name) != "*":
        _check(["usermod", "-p", "*", name])
    if not os.path.isdir(pw.pw_dir):
        os.makedirs(pw.pw_dir, mode=0o755)
        os.chown(pw.pw_dir, pw.pw_uid, pw.pw_gid)
    return pwd.getpwnam(name)


def empty_test_home(name: str = TEST_USER) -> None:
    """Remove what earlier runs left in the test user's home (jobs start there)."""
    home = pwd.getpwnam(name).pw_dir
    for entry in os.listdir(home):
        path = os.path.join(home, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def _shadow_password(name: str) -> Optional[str]:
    try:
        with open("/etc/shadow") as f:
            for line in f:
                parts = line.split(":")
                if parts[0] == name:
                    return parts[1]
    except OSError:
        pass
    return None


def _sshd_tree(root: int) -> List[int]:
    """``root`` and its descendants that are sshd processes (from /proc)."""
    children: Dict[int, List[int]] = {}
    names: Dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        names[int(entry)] = name
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if names.get(pid, "").startswith("sshd"):
            found.append(pid)
        todo.extend(children.get(pid, []))
    return found


# --------------------------------------------------------------------------

class Cluster:
    """``n_hosts`` real sshd processes on 127.0.<NET>.<first_ip> ... sharing one port."""

    supports_faults = True

    def __init__(
        self,
        workdir: str,
        n_hosts: int = 4,
        first_ip: int = FIRST_IP,
        port: Optional[int] = None,
        start_timeout: float = 60.0,
    ):
        if n_hosts < 1:
            raise ValueError("n_hosts must be >= 1")
        if first_ip < 1 or first_ip + n_hosts - 1 > 254:
            raise ValueError("127.0.%d.%d .. 127.0.%d.%d is not a usable range"
                             % (NET, first_ip, NET, first_ip + n_hosts - 1))
        self.workdir = os.path.abspath(workdir)
        self.n_hosts = n_hosts
        self.first_ip = first_ip
        self.port: Optional[int] = port
        self._fixed_port = port is not None
        self.start_timeout = start_timeout

        self.user = TEST_USER
        self.aliases: List[str] = ["node-%d" % (i + 1) for i in range(n_hosts)]
        self.ips: List[str] = ["127.0.%d.%d" % (NET, first_ip + i) for i in range(n_hosts)]
        self.ssh_config = os.path.join(self.workdir, "ssh_config")
        self.known_hosts = os.path.join(self.workdir, "known_hosts")
        self.identity_file = os.path.join(self.workdir, "client_key")
        self.authorized_keys = os.path.join(self.workdir, "authorized_keys")
        self.scratch = os.path.join(self.workdir, "scratch")
        # alias -> "ssh-ed25519 AAAA..." (key type and base64, no comment)
        self.host_keys: Dict[str, str] = {}
        self._verify_known_hosts = os.path.join(self.workdir, "known_hosts.verified")
        self._procs: List[Optional[subprocess.Popen]] = [None] * n_hosts
        self._uid: Optional[int] = None
        self._prepared = False

    # -- context manager ----------------------------------------------------
    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return "<Cluster %d hosts %s..%s port %s %s>" % (
            self.n_hosts, self.ips[0], self.ips[-1], self.port, self.workdir)

    # -- public API -----------------------------------------------------------
    @staticmethod
    def check_available() -> None:
        """Raise ClusterUnavailable if this machine cannot run the cluster."""
        if not os.path.isdir("/proc"):
            raise ClusterUnavailable("the sshd test cluster needs Linux (/proc)")
        if os.geteuid() != 0:
            raise ClusterUnavailable(
                "the sshd test cluster must run as root (it starts sshd and creates "
                "the %r user); current uid is %d" % (TEST_USER, os.geteuid()))
        if not os.access(SSHD, os.X_OK):
            raise ClusterUnavailable(
                "%s is missing: install openssh-server (apt-get install -y openssh-server)" % SSHD)
        for tool in ("ssh", "ssh-keygen"):
            if shutil.which(tool) is None:
                raise ClusterUnavailable(
                    "%r not found on PATH: install openssh-client" % tool)
        if not os.path.isfile(SHARED_SSHD_CONFIG):
            raise ClusterUnavailable("shared sshd config %s is missing" % SHARED_SSHD_CONFIG)

    @classmethod
    def external(cls) -> Optional["ExternalCluster"]:
        """The cluster described by PEGASUS_TEST_SSH_CONFIG/PEGASUS_TEST_NODES, or None."""
        config = os.environ.get(ENV_SSH_CONFIG)
        nodes = os.environ.get(ENV_NODES)
        if not config and not nodes:
            return None
        if not (config and nodes):
            raise ClusterUnavailable(
                "set both %s and %s for an external cluster" % (ENV_SSH_CONFIG, ENV_NODES))
        aliases = [a.strip() for a in nodes.split(",") if a.strip()]
        return ExternalCluster(config, aliases, os.environ.get(ENV_USER))

    def start(self) -> "Cluster":
        """Start every node and wait until each one accepts an SSH login."""
        self.check_available()
        if not self._prepared:
            self._prepare()
        deadline = time.monotonic() + self.start_timeout
        attempts = 1 if self._fixed_port else 5
        for attempt in range(attempts):
            if self.port is None:
                self.port = self._pick_port()
            self._write_configs()
            try:
                for i in range(self.n_hosts):
                    if self._procs[i] is None:
                        self._spawn(i)
                self._wait_ready(range(self.n_hosts), deadline)
                return self
            except _PortTaken:
                # Someone grabbed the port between our probe and sshd's bind.
                self.stop()
                if attempt + 1 == attempts:
                    raise ClusterError("could not bind a free port after %d tries" % attempts)
                self.port = None
            except BaseException:
                self.stop()
                raise
        return self  # not reached

    def stop(self) -> None:
        """Kill every sshd of the cluster, its sessions and their processes."""
        for i in range(self.n_hosts):
            self._kill(i)

    def kill_host(self, i: int) -> None:
        """Kill node i (0-based) like a crash: listener, sessions and commands."""
        self._kill(self._index(i))

    def start_host(self, i: int) -> None:
        """(Re)start node i (0-based) on the same address, port and host key."""
        i = self._index(i)
        if self._procs[i] is not None and self._procs[i].poll() is None:
            return
        self._procs[i] = None
        self._spawn(i)
        self._wait_ready([i], time.monotonic() + self.start_timeout)

    def freeze_host(self, i: int, sig: int = signal.SIGSTOP) -> List[int]:
        """Hang node i: SIGSTOP its listener and session sshd's (the kernel still
        acknowledges TCP, so only a request that wants an answer notices).
        ``thaw_host`` undoes it. Returns the pids signalled."""
        proc = self._procs[self._index(i)]
        pids = _sshd_tree(proc.pid) if proc is not None else []
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return pids

    def thaw_host(self, i: int) -> None:
        self.freeze_host(i, signal.SIGCONT)

    def is_running(self, i: int) -> bool:
        p = self._procs[self._index(i)]
        return p is not None and p.poll() is None

    def ssh(self, alias: str, command: str, timeout: float = 30, check: bool = False,
            input: Optional[str] = None, options: Sequence[str] = ()) -> subprocess.CompletedProcess:
        """Run ``command`` on ``alias`` with the real OpenSSH client."""
        return _ssh(self.ssh_config, alias, command, timeout, check, input, options)

    def host_index(self, alias: str) -> int:
        return self.aliases.index(alias)

    def address(self, alias: str) -> str:
        return self.ips[self.aliases.index(alias)]

    def known_hosts_line(self, alias: str) -> str:
        """The line OpenSSH writes to known_hosts for ``alias``."""
        return "[%s]:%d %s" % (self.address(alias), self.port, self.host_keys[alias])

    def seed_known_hosts(self, aliases: Optional[Sequence[str]] = None) -> None:
        """Write correct known_hosts entries for ``aliases`` (default: all)."""
        with open(self.known_hosts, "w") as f:
            for a in (self.aliases if aliases is None else aliases):
                f.write(self.known_hosts_line(a) + "\n")

    def reset_known_hosts(self) -> None:
        """Empty known_hosts, so the next connection learns keys afresh."""
        open(self.known_hosts, "w").close()

    def log_path(self, i: int) -> str:
        return os.path.join(self._node_dir(self._index(i)), "sshd.log")

    # -- internals --------------------------------------------------------------
    def _index(self, i) -> int:
        if isinstance(i, str):
            return self.aliases.index(i)
        if not 0 <= i < self.n_hosts:
            raise IndexError("node index %r out of range 0..%d" % (i, self.n_hosts - 1))
        return i

    def _node_dir(self, i: int) -> str:
        return os.path.join(self.workdir, self.aliases[i])

    def _prepare(self) -> None:
        pw = ensure_test_user(self.user)
        self._uid = pw.pw_uid
        if not os.path.isdir(PRIVSEP_DIR):
            os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        os.makedirs(self.workdir, exist_ok=True)
        # sshd reads authorized_keys with the user's privileges.
        os.chmod(self.workdir, 0o755)
        if not os.path.exists(self.identity_file):
            _check(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pegasus-test-client",
                    "-f", self.identity_file])
        shutil.copyfile(self.identity_file + ".pub", self.authorized_keys)
        os.chmod(self.authorized_keys, 0o644)
        os.makedirs(self.scratch, exist_ok=True)
        os.chown(self.scratch, pw.pw_uid, pw.pw_gid)
        os.chmod(self.scratch, 0o777)
        for i, alias in enumerate(self.aliases):
            d = self._node_dir(i)
            os.makedirs(d, exist_ok=True)
            key = os.path.join(d, "ssh_host_ed25519_key")
            if not os.path.exists(key):
                _check(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", alias, "-f", key])
            with open(key + ".pub") as f:
                self.host_keys[alias] = " ".join(f.read().split()[:2])
        open(self.known_hosts, "a").close()
        self._check_user_can_read(self.authorized_keys, pw)
        self._prepared = True

    def _check_user_can_read(self, path: str, pw: pwd.struct_passwd) -> None:
        res = subprocess.run(["test", "-r", path], user=pw.pw_uid, group=pw.pw_gid,
                             extra_groups=[], stdin=subprocess.DEVNULL, timeout=30)
        if res.returncode != 0:
            raise ClusterUnavailable(
                "user %s cannot read %s: every parent directory of the cluster workdir "
                "must be world-searchable (pytest's tmp_path is not; use a directory "
                "under /tmp)" % (pw.pw_name, path))

    def _pick_port(self) -> int:
        rng = random.Random()
        for _ in range(200):
            port = rng.randint(*PORT_RANGE)
            if _port_free(self.ips, port):
                return port
        raise ClusterError("no free port in %d-%d on %s" % (PORT_RANGE + (self.ips[0],)))

    def _write_configs(self) -> None:
        for i, ip in enumerate(self.ips):
            d = self._node_dir(i)
            with open(os.path.join(d, "sshd_config"), "w") as f:
                f.write(
                    "# %s of the Pegasus test cluster (generated by tests/cluster.py)\n"
                    "ListenAddress %s:%d\n"
                    "HostKey %s\n"
                    "PidFile %s\n"
                    "AuthorizedKeysFile %s\n"
                    "AllowUsers %s\n"
                    "Include %s\n"
                    % (self.aliases[i], ip, self.port,
                       os.path.join(d, "ssh_host_ed25519_key"),
                       os.path.join(d, "sshd.pid"),
                       self.authorized_keys, self.user, SHARED_SSHD_CONFIG))
        lines = [
            "# Pegasus test cluster: %d nodes on port %d (generated by tests/cluster.py)\n"
            % (self.n_hosts, self.port)
        ]
        for alias, ip in zip(self.aliases, self.ips):
            lines.append(
                "\nHost %s\n"
                "    HostName %s\n"
                "    Port %d\n"
                "    User %s\n"
                "    IdentityFile %s\n"
                "    IdentitiesOnly yes\n"
                "    UserKnownHostsFile %s\n"
                "    GlobalKnownHostsFile /dev/null\n"
                "    StrictHostKeyChecking accept-new\n"
                "    HashKnownHosts no\n"
                "    BatchMode yes\n"
                "    ConnectTimeout 10\n"
                % (alias, ip, self.port, self.user, self.identity_file, self.known_hosts))
        with open(self.ssh_config, "w") as f:
            f.writelines(lines)
        # Exact keys, used only by the readiness probe (the cluster's own
        # known_hosts stays empty so tests can watch accept-new at work).
        with open(self._verify_known_hosts, "w") as f:
            for alias, ip in zip(self.aliases, self.ips):
                f.write("[%s]:%d %s\n" % (ip, self.port, self.host_keys[alias]))

    def _spawn(self, i: int) -> None:
        d = self._node_dir(i)
        with open(os.path.join(d, "sshd.log"), "ab") as log:
            log.write(("--- %s starting sshd on %s:%d\n"
                       % (time.strftime("%H:%M:%S"), self.ips[i], self.port)).encode())
            log.flush()
            self._procs[i] = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", os.path.join(d, "sshd_config")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, preexec_fn=_sshd_preexec(), close_fds=True,
            )

    def _wait_ready(self, indexes, deadline: float) -> None:
        pending = list(indexes)
        # 1. the listener is up and a forked child sends the SSH banner
        while pending:
            for i in list(pending):
                p = self._procs[i]
                if p.poll() is not None:
                    log = _tail(self.log_path(i))
                    if "Address already in use" in log.rsplit("--- ", 1)[-1] and not self._fixed_port:
                        raise _PortTaken()
                    raise ClusterError("sshd for %s (%s:%d) exited with %s:\n%s"
                                       % (self.aliases[i], self.ips[i], self.port, p.returncode, log))
                if _banner(self.ips[i], self.port, timeout=max(0.1, min(2.0, deadline - time.monotonic()))):
                    pending.remove(i)
            if pending:
                if time.monotonic() > deadline:
                    raise ClusterError("sshd not answering on %s after %.0fs:\n%s" % (
                        ", ".join("%s:%d" % (self.ips[i], self.port) for i in pending),
                        self.start_timeout, _tail(self.log_path(pending[0]))))
                time.sleep(0.02)
        # 2. a real login works (public key accepted, host key as generated)
        pending = list(indexes)
        while pending:
            procs = {
                i: subprocess.Popen(
                    ["ssh", "-F", self.ssh_config,
                     "-o", "UserKnownHostsFile=" + self._verify_known_hosts,
                     "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
                     self.aliases[i], "true"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True)
                for i in pending
            }
            errors = {}
            for i, p in procs.items():
                try:
                    _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    _, err = p.communicate()
                if p.returncode == 0:
                    pending.remove(i)
                else:
                    errors[i] = err
            if pending:
                if time.monotonic() > deadline:
                    i = pending[0]
                    raise ClusterError("ssh login to %s (%s:%d) fails: %s\nsshd log:\n%s" % (
                        self.aliases[i], self.ips[i], self.port, errors[i].strip(),
                        _tail(self.log_path(i))))
                time.sleep(0.1)

    def _kill(self, i: int) -> None:
        p = self._procs[i]
        if p is None:
            return
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGSTOP)  # no new connections forked meanwhile
            except ProcessLookupError:
                pass
        victims: set = set()
        for _ in range(20):
            table = _proc_table()
            found = set(_descendants(p.pid, table)) if p.poll() is None else set()
            found.update(_session_pids(self.ips[i], self.port, self._uid, table))
            found -= victims
            found.discard(os.getpid())
            if not found:
                break
            for pid in found:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            victims |= found
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise ClusterError("sshd pid %d of %s did not die" % (p.pid, self.aliases[i]))
        deadline = time.monotonic() + 10
        while any(_alive(v) for v in victims) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._procs[i] = None


class _PortTaken(Exception):
    pass


def _ssh(config: str, alias: str, command: str, timeout: float, check: bool,
         input: Optional[str], options: Sequence[str]) -> subprocess.CompletedProcess:
    cmd = ["ssh", "-F", config, "-o", "LogLevel=ERROR", *options, alias, command]
    return subprocess.run(cmd, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=check)


class ExternalCluster:
    """A cluster someone else runs (e.g. docker compose); start/stop do nothing."""

    supports_faults = False

    def __init__(self, ssh_config: str, aliases: Sequence[str], user: Optional[str] = None):
        if not os.path.isfile(ssh_config):
            raise ClusterUnavailable("%s=%s does not exist" % (ENV_SSH_CONFIG, ssh_config))
        if not aliases:
            raise ClusterUnavailable("%s names no nodes" % ENV_NODES)
        self.ssh_config = os.path.abspath(ssh_config)
        self.aliases = list(aliases)
        self.n_hosts = len(self.aliases)
        self.user = user
        self.host_keys: Dict[str, str] = {}

    def __enter__(self) -> "ExternalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "ExternalCluster":
        return self

    def stop(self) -> None:
        pass

    def kill_host(self, i) -> None:
        raise NotImplementedError("an external cluster cannot kill its hosts")

    def start_host(self, i) -> None:
        raise NotImplementedError("an external cluster cannot start its hosts")

    def ssh(self, alias: str, command: str, timeout: float = 30, check: bool = False,
            input: Optional[str] = None, options: Sequence[str] = ()) -> subprocess.CompletedProcess:
        return _ssh(self.ssh_config, alias, command, timeout, check, input, options)


@contextlib.contextmanager
def private_cluster(name: str, n_hosts: int, offset: int):
    """A started cluster of a test module's own (which its tests may stop), at
    ``offset`` addresses into this worker's range; stopped and removed after."""
    from helpers import cluster_or_skip

    cluster_or_skip()
    workdir = tempfile.mkdtemp(prefix="pegasus-%s-" % name)
    c = Cluster(workdir, n_hosts=n_hosts, first_ip=FIRST_IP + offset)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def cluster_from_env(workdir: str, n_hosts: int = 4, **kw):
    """The external cluster if configured, else a local (not yet started) Cluster."""
    return Cluster.external() or Cluster(workdir, n_hosts, **kw)


if __name__ == "__main__":  # manual use: python tests/cluster.py [N]
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    wd = tempfile.mkdtemp(prefix="pegasus-cluster-")
    t0 = time.monotonic()
    with Cluster(wd, n) as c:
        print("%d hosts up in %.2fs: %r" % (n, time.monotonic() - t0, c))
        print("ssh -F %s node-1" % c.ssh_config)
        if sys.stdin.isatty():
            input("press Enter to stop ")
    shutil.rmtree(wd, ignore_errors=True)
