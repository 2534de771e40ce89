"""Hosts that fail: the real ``pegasus`` CLI against real sshd's that die.

The tests kill and restart sshd's, so they use a small cluster of their own
(``failing``: 2 nodes on the addresses after the session cluster's) instead of
it, and a host in a network namespace of their own (``netns_host``: an sshd
behind a veth pair with link-local addresses) for network partitions. Jobs are gated
by flag files in the cluster's scratch folder (the nodes share this
machine's file system) and say where they ran with ``{{ hostname }}``.

Nothing waits with a fixed sleep: ``wait_for`` polls with a deadline. The
time a partition took to be noticed is printed and recorded as a figure
(``record_property``), never asserted.
"""
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest
import yaml

from cluster import (OFFSET_FAILING, SSHD, Cluster, _descendants, _proc_table,
                     private_cluster,
                     _sshd_preexec)
from helpers import (Pegasus, cluster_or_skip, jobs_of, kill_all, queue_entries, read,
                     setup, unavailable, wait_for, write)

pytestmark = pytest.mark.sshd  # its own sshd nodes, a network namespace: root

LOST = "connection lost, outcome unknown"


# ---------------------------------------------------------------- helpers

class Flags:
    """A folder shared by the test and the jobs (scratch of the cluster)."""

    def __init__(self, scratch):
        self.dir = os.path.join(scratch, "f-" + uuid.uuid4().hex)
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o777)

    def path(self, name):
        return os.path.join(self.dir, name)

    def gate(self, name):
        """Shell: wait until the test touches ``name``."""
        return "while [ ! -e %s ]; do sleep 0.05; done" % self.path(name)

    def log(self, tag):
        """Shell: append '<tag> <host>' to the log."""
        return "echo %s {{ hostname }} >> %s" % (tag, self.path("log"))

    def touch(self, name):
        open(self.path(name), "a").close()

    def exists(self, name):
        return os.path.exists(self.path(name))

    def records(self):
        """[(tag, host)] in the order the jobs wrote them."""
        return [tuple(line.split()) for line in read(self.path("log")).splitlines()]

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def add_to_queue(folder, commands):
    """Append entries to a running Pegasus's queue.yaml, under its lock, atomically."""
    path = os.path.join(str(folder), "queue.yaml")
    with open(os.path.join(str(folder), ".queue.yaml.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = read(path)
        if text and not text.endswith("\n"):
            text += "\n"
        write(path + ".tmp", text + "".join("- %s\n" % c for c in commands))
        os.replace(path + ".tmp", path)


def marked_pids(marker):
    """Live processes of this machine with ``marker`` in their command line or environment."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmdline = f.read()
            with open("/proc/%s/environ" % name, "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if cmdline and (marker.encode() in cmdline or marker.encode() in environ):
            found.append(int(name))
    return found


def crash_sshd(cluster, alias):
    """Kill a node like a crash: its sshd processes first, all at once, then the rest.

    ``cluster.kill_host`` alone kills the sessions' processes in no set order:
    when the job dies first, the job's exit status may still reach Pegasus
    before the connection goes (a truthful ``exit 137``, but not the lost
    connection these tests are about).
    """
    i = cluster.host_index(alias)
    listener = cluster._procs[i].pid
    tree = [listener] + _descendants(listener, _proc_table())
    for pid in tree:
        try:
            with open("/proc/%d/comm" % pid) as f:
                is_sshd = f.read().startswith("sshd")
            if is_sshd:
                os.kill(pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
    cluster.kill_host(i)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def failing():
    """2 sshd nodes of our own (node-1, node-2, after the session cluster's addresses)
    that tests may kill."""
    with private_cluster("failing", 2, OFFSET_FAILING) as c:
        yield c


@pytest.fixture
def fc(failing):
    """The failing cluster, every node running again after the test."""
    yield failing
    for i in range(failing.n_hosts):
        failing.start_host(i)


@pytest.fixture
def flags(failing):
    f = Flags(failing.scratch)
    yield f
    f.cleanup()


# ---------------------------------------------------------------- 1. sshd killed mid-job

@pytest.mark.slow
def test_sshd_killed_mid_job_loses_that_job_and_the_queue_goes_on(fc, flags, tmp_path):
    """Two sub-nodes per host; A runs on host X, B on host Y, the others are idle.

    X's sshd dies: A is lost, X's idle sub-node takes nothing either, the
    entries added meanwhile run on Y; once X is back it takes jobs again.
    """
    a = "echo {{ hostname }} >> %s; %s" % (flags.path("A.host"), flags.gate("never"))
    b = "touch %s; %s; %s" % (flags.path("B.started"), flags.gate("B.go"), flags.log("B"))
    g = "touch %s; %s; %s" % (flags.path("G.started"), flags.gate("G.go"), flags.log("G"))
    setup(tmp_path, "- hostname: [node-1, node-2]\n  slot: [a, b]\n", [a, b])
    peg = Pegasus(tmp_path, ["q", "--ssh-config", fc.ssh_config])
    try:
        wait_for(lambda: read(flags.path("A.host")).endswith("\n")
                 and flags.exists("B.started"), what="jobs A and B to start")
        lost = read(flags.path("A.host")).strip()
        other = {"node-1": "node-2", "node-2": "node-1"}[lost]
        crash_sshd(fc, lost)
        wait_for(peg.saw("host %s: connection lost" % lost), what="the loss to be reported")
        # More work arrives while X is down: only Y's free sub-node may take it.
        add_to_queue(tmp_path, [flags.log("C1"), flags.log("C2"), flags.log("C3"), g,
                                flags.log("H")])
        wait_for(lambda: flags.exists("G.started"), what="job G to start")
        fc.start_host(lost)
        wait_for(peg.saw("host %s: connected; taking jobs again" % lost), timeout=60,
                 what="the lost host to be reconnected")
        wait_for(lambda: ("H", lost) in flags.records(), what="job H to run on the host back")
        flags.touch("B.go")
        flags.touch("G.go")
        status = peg.wait()
    finally:
        peg.stop()
    out = peg.out()
    assert status == 1, peg.said()
    jobs = jobs_of(out)
    job_a = [j for j in jobs if j["command"] == a.replace("{{ hostname }}", lost)]
    assert len(job_a) == 1, out
    assert job_a[0]["label"].startswith("[%s " % lost)
    assert job_a[0]["done"].startswith(LOST), job_a[0]
    assert read(flags.path("A.host")).split() == [lost]  # launched once, not re-run
    records = flags.records()
    assert records[:4] == [("C1", other), ("C2", other), ("C3", other), ("H", lost)], records
    assert sorted(records[4:]) == [("B", other), ("G", other)], records
    # Nothing else was tried on the lost host: no second loss, nothing put back.
    assert [j for j in jobs if j["done"] and not j["done"].startswith("exit 0")] == job_a, out
    # The summary names the lost job; it is not counted as a success or a plain failure.
    summary = [line for line in out.splitlines() if line.startswith("pegasus: ")]
    assert any(job_a[0]["label"] in line and LOST in line for line in summary), out
    # interrupted.yaml keeps the job, with its sub-node, for 'pegasus requeue'.
    interrupted = read(tmp_path / "interrupted.yaml")
    comments = [line for line in interrupted.splitlines() if line.startswith("#")]
    assert len(comments) == 1 and "for %s" % job_a[0]["label"] in comments[0], interrupted
    assert yaml.load(interrupted, Loader=yaml.BaseLoader) == [{"command": a}]
    assert queue_entries(tmp_path / "queue.yaml") == []


# ---------------------------------------------------------------- 2. sshd stopped before start

@pytest.mark.slow
def test_sshd_stopped_before_start_warns_runs_elsewhere_and_takes_the_host_back(
        fc, flags, tmp_path):
    """Start with node-2 down; it is retried in the background and used once back.

    (Exit 3 with every host down is in test_queue_mode.py.)
    """
    fc.kill_host("node-2")
    g = "touch %s; %s; %s" % (flags.path("G.started"), flags.gate("G.go"), flags.log("G"))
    setup(tmp_path, "- node-1\n- node-2\n", [flags.log("A"), g, flags.log("H")])
    peg = Pegasus(tmp_path, ["q", "--ssh-config", fc.ssh_config])
    try:
        wait_for(lambda: flags.exists("G.started"), what="job G to start")
        warning = [line for line in peg.out().splitlines() if "host node-2" in line]
        assert warning and "running on the other hosts" in warning[0], peg.said()
        assert flags.records() == [("A", "node-1")]
        fc.start_host("node-2")
        wait_for(lambda: ("H", "node-2") in flags.records(), timeout=60,
                 what="job H to run on node-2 once it is back")
        flags.touch("G.go")
        status = peg.wait()
    finally:
        peg.stop()
    assert status == 0, peg.said()
    assert "host node-2: connected; taking jobs again" in peg.out()
    assert flags.records() == [("A", "node-1"), ("H", "node-2"), ("G", "node-1")]


# ---------------------------------------------------------------- 3. broadcast

@pytest.mark.parametrize("error_aborts", [True, False], ids=["-e", "no-e"])
def test_broadcast_sshd_killed_mid_step_fails_the_step_for_that_host(
        fc, flags, tmp_path, error_aborts):
    step1 = "touch %s.{{ hostname }}; %s" % (flags.path("s1"), flags.gate("s1.go"))
    step2 = flags.log("step2")
    setup(tmp_path, "- node-1\n- node-2\n", [step1, step2])
    peg = Pegasus(tmp_path, ["b", "--ssh-config", fc.ssh_config]
                  + (["-e"] if error_aborts else []))
    try:
        wait_for(lambda: flags.exists("s1.node-1") and flags.exists("s1.node-2"),
                 what="step 1 to start on both nodes")
        crash_sshd(fc, "node-2")
        wait_for(peg.saw("[node-2] === done (%s" % LOST), what="the loss to be reported")
        flags.touch("s1.go")
        status = peg.wait()
    finally:
        peg.stop()
    out = peg.out()
    assert status == 1, peg.said()
    assert "1 of 2 sub-nodes failed" in out, out
    report = [line for line in out.splitlines() if line.startswith("pegasus:   [node-2] ")]
    assert report and LOST in report[0], out
    done = {j["label"]: j["done"] for j in jobs_of(out) if j["command"].startswith("touch")}
    assert done["[node-1]"] == "exit 0"
    assert done["[node-2]"].startswith(LOST)
    if error_aborts:
        assert queue_entries(tmp_path / "queue.yaml") == [step2], out
        assert flags.records() == []
    else:
        assert queue_entries(tmp_path / "queue.yaml") == []
        assert flags.records() == [("step2", "node-1")], out


# ---------------------------------------------------------------- 4. killed by a signal

@pytest.mark.parametrize("where", ["ssh", "local"])
def test_job_killed_by_a_signal_is_reported_as_killed(fc, flags, tmp_path, where):
    host = "node-1" if where == "ssh" else "localhost"
    pid_file = flags.path("pid")
    outside = "echo $$ > %s.tmp && mv %s.tmp %s; exec sleep 300" % ((pid_file,) * 3)
    queue = ["kill -KILL $$", "kill -TERM $$", outside]
    setup(tmp_path, "- hostname: %s\n  slot: [0, 1, 2]\n" % host, queue)
    peg = Pegasus(tmp_path, ["q", "--ssh-config", fc.ssh_config])
    try:
        # what the OOM killer does: SIGKILL from outside to the job's process
        pid = int(wait_for(lambda: read(pid_file).strip(), what="the sleeping job"))
        os.kill(pid, signal.SIGKILL)
        status = peg.wait()
    finally:
        peg.stop()
    out = peg.out()
    assert status == 1, peg.said()
    done = {j["command"]: j["done"] for j in jobs_of(out)}
    assert done == {queue[0]: "exit 137 (killed by SIGKILL)",
                    queue[1]: "exit 143 (killed by SIGTERM)",
                    queue[2]: "exit 137 (killed by SIGKILL)"}, out
    assert "3 jobs, 3 failed" in out


# ---------------------------------------------------------------- 5. network partition

def _free_link_local():
    """A /30 in 169.254.0.0/16 that no address of this machine is in."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for _ in range(100):
        third, fourth = uuid.uuid4().int % 254 + 1, (uuid.uuid4().int % 63) * 4
        net = "169.254.%d." % third
        if not any(net + str(fourth + k) in used for k in range(4)):
            return net + str(fourth + 1), net + str(fourth + 2)
    raise RuntimeError("no free link-local /30")


def _ip(*args):
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), res.stderr.strip()))


class _NetnsCluster(Cluster):
    """One node ('netns-node'): an sshd run with ``ip netns exec NS``, on port 2222."""

    def __init__(self, workdir, netns, ip):
        super().__init__(workdir, n_hosts=1, port=2222)
        self.netns = netns
        self.ips = [ip]
        self.aliases = ["netns-node"]

    def _spawn(self, i):
        d = self._node_dir(i)
        with open(os.path.join(d, "sshd.log"), "ab") as log:
            self._procs[i] = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, SSHD, "-D", "-e", "-f",
                 os.path.join(d, "sshd_config")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                preexec_fn=_sshd_preexec(), close_fds=True)


class NetnsHost:
    """A host in a network namespace of our own, behind a veth pair.

    ``partition()`` takes the namespace's end of the link down: packets to
    and from the host vanish, as when a host is powered off or a cable is
    pulled (nothing answers, nothing is refused). ``heal()`` brings it back.
    """

    def __init__(self, workdir):
        tag = uuid.uuid4().hex[:8]
        self.netns, self.veth_root, self.veth_ns = "pgt-" + tag, "pgr" + tag, "pgn" + tag
        self.root_ip, self.ip = _free_link_local()
        self.cluster = _NetnsCluster(workdir, self.netns, self.ip)
        self.alias = "netns-node"

    def start(self):
        _ip("netns", "add", self.netns)
        try:
            _ip("link", "add", self.veth_root, "type", "veth", "peer", "name", self.veth_ns)
            _ip("link", "set", self.veth_ns, "netns", self.netns)
            _ip("addr", "add", self.root_ip + "/30", "dev", self.veth_root)
            _ip("link", "set", self.veth_root, "up")
            _ip("-n", self.netns, "addr", "add", self.ip + "/30", "dev", self.veth_ns)
            _ip("-n", self.netns, "link", "set", self.veth_ns, "up")
            _ip("-n", self.netns, "link", "set", "lo", "up")
            self.cluster.start()
        except BaseException:
            self.stop()
            raise
        return self

    def partition(self):
        _ip("-n", self.netns, "link", "set", self.veth_ns, "down")

    def heal(self):
        _ip("-n", self.netns, "link", "set", self.veth_ns, "up")

    def stop(self):
        try:
            self.cluster.stop()
        finally:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
            subprocess.run(["ip", "link", "del", self.veth_root], capture_output=True)


def netns_unavailable():
    """Why this machine cannot make a network namespace, or None."""
    name = "pgt-probe-" + uuid.uuid4().hex[:6]
    res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if res.returncode != 0:
        return "ip netns add failed: " + (res.stderr.strip() or "exit %d" % res.returncode)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


@pytest.fixture(scope="module")
def netns_host():
    cluster_or_skip()
    if shutil.which("ip") is None:
        reason = "the 'ip' command (iproute2) is missing"
    else:
        reason = netns_unavailable()
    if reason:
        unavailable("network namespaces", reason)
    workdir = tempfile.mkdtemp(prefix="pegasus-netns-")
    host = NetnsHost(workdir)
    try:
        host.start()
        yield host
    finally:
        host.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def partitioned(netns_host):
    """The netns host; its link is up again and its jobs gone after the test."""
    marker = "PGNS" + uuid.uuid4().hex
    yield netns_host, marker
    netns_host.heal()
    kill_all(marked_pids(marker))


@pytest.mark.slow
def test_partition_mid_job_is_noticed_and_the_host_taken_back(partitioned, tmp_path,
                                                               record_property):
    host, marker = partitioned
    job = "export %s=1; echo started; sleep 300" % marker
    setup(tmp_path, "- %s\n" % host.alias, [job])
    peg = Pegasus(tmp_path, ["q", "--ssh-config", host.cluster.ssh_config])
    try:
        wait_for(peg.saw("[%s] started" % host.alias), what="the job to start")
        host.partition()
        cut = time.monotonic()
        wait_for(peg.saw("host %s: connection lost" % host.alias), timeout=75,
                 interval=0.02, what="Pegasus to notice the partition")
        noticed = time.monotonic() - cut
        print("\nFIGURE: partition noticed after %.1f s" % noticed)
        record_property("partition_noticed_s", round(noticed, 1))
        host.heal()
        # The queue is empty, but Pegasus learns that only from a host that is back.
        status = peg.wait(timeout=90)
    finally:
        peg.stop()
    out = peg.out()
    assert status == 1, peg.said()
    done = [j["done"] for j in jobs_of(out)]
    assert len(done) == 1 and done[0].startswith(LOST), out
    assert "host %s: connected; taking jobs again" % host.alias in out
    assert yaml.load(read(tmp_path / "interrupted.yaml"), Loader=yaml.BaseLoader) == [
        {"command": job}]


@pytest.mark.slow
def test_partition_mid_job_terminates_the_remote_job(partitioned, tmp_path, record_property):
    """A lost connection (laptop gone) does not leave the job running on the host
    past --orphan-timeout (10 s here, the shortest; 10 minutes by default); this allows
    30 s."""
    host, marker = partitioned
    job = "export %s=1; echo started; sleep 300" % marker
    setup(tmp_path, "- %s\n" % host.alias, [job])
    peg = Pegasus(tmp_path, ["q", "--ssh-config", host.cluster.ssh_config,
                             "--orphan-timeout", "10"])
    try:
        wait_for(peg.saw("[%s] started" % host.alias), what="the job to start")
        assert marked_pids(marker), "the job's processes are not visible"
        host.partition()
        cut = time.monotonic()
        try:
            wait_for(lambda: not marked_pids(marker), timeout=30, interval=0.02,
                     what="the remote job to be terminated after the partition")
        finally:
            left = marked_pids(marker)
            print("\nFIGURE: remote job after partition: %s" % (
                "gone after %.1f s" % (time.monotonic() - cut) if not left
                else "%d process(es) still running after %.1f s"
                % (len(left), time.monotonic() - cut)))
        record_property("partition_remote_job_gone_s", round(time.monotonic() - cut, 1))
    finally:
        peg.stop()
