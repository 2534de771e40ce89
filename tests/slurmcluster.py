"""A throw-away one-machine Slurm cluster: munged, slurmctld and slurmd, 4 fake GPUs.

Plain Python (no pytest import), like ``tests/cluster.py``::

    from tests.slurmcluster import SlurmCluster

    with SlurmCluster("/tmp/some-dir") as slurm:
        subprocess.run(["srun", "-p", slurm.partition, "true"], env=slurm.env())

Everything lives in ``workdir`` (configs, munge key and socket, state, spool,
logs, the fake GPUs' device nodes). The daemons run in the foreground as
children of the thread that called ``start()``, with PR_SET_PDEATHSIG, so a
crashed test run leaves none behind; ``stop()`` ends them and waits.

Ports: 6817 + 40 * PEGASUS_TEST_NET + 2 * (xdist worker number), so suites on
other address nets (and xdist workers) each have their own controller.

Requirements: Linux, root, Debian's ``slurm-wlm`` and ``munge``. Otherwise
:class:`SlurmUnavailable` is raised with the reason.
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from typing import Dict, List, Optional

__all__ = ["SlurmCluster", "SlurmUnavailable", "PARTITION", "GPUS", "why_unavailable"]

PARTITION = "pegtest"
GPUS = 4
DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
CLIENTS = ("srun", "squeue", "scontrol", "scancel")
START_TIMEOUT = 30.0  # seconds for the node to be idle


class SlurmUnavailable(Exception):
    """This machine cannot run the test Slurm cluster (the reason in words)."""


def why_unavailable() -> Optional[str]:
    """None if a cluster can start here, else why not."""
    if os.geteuid() != 0:
        return "needs root (to run munged, slurmctld and slurmd)"
    missing = [p for p in DAEMONS if not os.path.exists(p)]
    missing += [c for c in CLIENTS if shutil.which(c) is None]
    if missing:
        return "missing " + ", ".join(missing) + " (apt-get install slurm-wlm munge)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (apt-get install munge)"
    return None


def _ports() -> int:
    net = int(os.environ.get("PEGASUS_TEST_NET", "0"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    number = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    return 6817 + 40 * net + 2 * number




class SlurmCluster:
    def __init__(self, workdir: str, port: Optional[int] = None):
        self.workdir = os.path.abspath(workdir)
        self.port = port or _ports()
        self.node = socket.gethostname().split(".")[0]
        self.partition = PARTITION
        self.conf = os.path.join(self.workdir, "slurm.conf")
        self.procs: List[subprocess.Popen] = []

    def env(self, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """An environment whose Slurm commands talk to this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = self.conf
        return env

    def __enter__(self) -> "SlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        why = why_unavailable()
        if why:
            raise SlurmUnavailable(why)
        try:
            self._write_files()
            self._munged()
            self._daemon(["/usr/sbin/slurmctld", "-D", "-i", "-f", self.conf], "slurmctld")
            self._daemon(["/usr/sbin/slurmd", "-D", "-f", self.conf], "slurmd")
            self._wait_idle()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancel every job, end the daemons (TERM, then KILL) and wait for them."""
        if self.procs and self.procs[-1].poll() is None:
            subprocess.run(["scancel", "--partition", self.partition],
                           env=self.env(), capture_output=True, timeout=10)
            deadline = time.monotonic() + 15  # let slurmd end the jobs' tasks
            while time.monotonic() < deadline and self._jobs_left():
                time.sleep(0.1)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []

    def _jobs_left(self) -> bool:
        try:
            return bool(self.squeue_format("%i"))
        except (RuntimeError, subprocess.TimeoutExpired):
            return False

    def squeue(self) -> str:
        """The cluster's jobs, one ``ID NAME STATE`` line each (empty: none)."""
        return self.squeue_format("%i %j %T")

    def squeue_format(self, fmt: str) -> str:
        """``squeue -h -o FMT``, stripped."""
        done = subprocess.run(["squeue", "-h", "-o", fmt], env=self.env(),
                              capture_output=True, text=True, timeout=20)
        if done.returncode:
            raise RuntimeError("squeue failed: " + done.stderr)
        return done.stdout.strip()

    def log(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.out", "slurmctld.out", "slurmd.out"):
            try:
                with open(os.path.join(self.workdir, name)) as f:
                    parts.append(f"--- {name}\n" + f.read()[-3000:])
            except OSError:
                pass
        return "\n".join(parts)

    # ------------------------------------------------------------ set-up

    def _path(self, *names: str) -> str:
        return os.path.join(self.workdir, *names)

    def _write_files(self) -> None:
        for sub in ("state", "spool", "gpus"):
            os.makedirs(self._path(sub), exist_ok=True)
        os.chmod(self.workdir, 0o755)
        for i, minor in enumerate((3, 5, 7, 8)[:GPUS]):  # character devices: Slurm
            gpu = self._path("gpus", f"gpu{i}")            # rejects plain files
            if not os.path.exists(gpu):
                os.mknod(gpu, 0o666 | 0o020000, os.makedev(1, minor))
        with open(self._path("gres.conf"), "w") as f:
            f.write(f"Name=gpu File={self._path('gpus')}/gpu[0-{GPUS - 1}]\n")
        with open(self.conf, "w") as f:
            f.write(self._slurm_conf())

    def _slurm_conf(self) -> str:
        p = self._path
        return f"""\
ClusterName=pegtest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={self.port}
SlurmdPort={self.port + 1}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={p('munge', 'munge.socket')}
CredType=cred/munge
StateSaveLocation={p('state')}
SlurmdSpoolDir={p('spool')}
SlurmctldPidFile={p('slurmctld.pid')}
SlurmdPidFile={p('slurmd.pid')}
SlurmctldLogFile={p('slurmctld.log')}
SlurmdLogFile={p('slurmd.log')}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
GresTypes=gpu
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=2
InactiveLimit=0
NodeName={self.node} NodeAddr=127.0.0.1 CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 Gres=gpu:{GPUS} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8
"""

    def _munged(self) -> None:
        munge = pwd.getpwnam("munge")
        folder = self._path("munge")
        os.makedirs(folder, exist_ok=True)
        key = os.path.join(folder, "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        for path in (folder, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        os.chmod(folder, 0o755)  # munged wants its socket's folder open to all
        os.chmod(key, 0o400)
        log = self._path("munged.log")
        open(log, "a").close()
        os.chown(log, munge.pw_uid, munge.pw_gid)
        self._daemon(["/usr/sbin/munged", "-F", f"--socket={folder}/munge.socket",
                      f"--key-file={key}", f"--pid-file={folder}/munged.pid",
                      f"--seed-file={folder}/munged.seed", f"--log-file={log}"],
                     "munged", user=munge)
        self._wait(lambda: os.path.exists(f"{folder}/munge.socket"), "munged's socket")

    def _daemon(self, argv: List[str], name: str, user=None) -> None:
        from pegasus import parentdeath  # not at import: conftest imports no pegasus module

        die_with_parent = parentdeath.arm()  # prctl looked up before the fork

        def preexec():
            die_with_parent()
            if user is not None:
                os.setgid(user.pw_gid)
                os.setgroups([])
                os.setuid(user.pw_uid)
        out = open(self._path(name + ".out"), "ab")
        self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT, preexec_fn=preexec,
                                           env=self.env()))
        out.close()

    def _wait_idle(self) -> None:
        def idle():
            done = subprocess.run(["sinfo", "-h", "-o", "%T", "-p", self.partition],
                                  env=self.env(), capture_output=True, text=True)
            return done.returncode == 0 and done.stdout.strip() == "idle"
        self._wait(idle, "the Slurm node to be idle")

    def _wait(self, condition, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not condition():
            for proc in self.procs:
                if proc.poll() is not None:
                    raise SlurmUnavailable(f"{proc.args[0]} exited:\n" + self.log())
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"timed out waiting for {what}:\n" + self.log())
            time.sleep(0.1)


if __name__ == "__main__":  # python -m tests.slurmcluster DIR: start, try srun, stop
    import sys
    import tempfile
    with SlurmCluster(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()) as c:
        started = time.monotonic()
        out = subprocess.run(["srun", "-p", c.partition, "--gres=gpu:2", "sh", "-c",
                              "echo $CUDA_VISIBLE_DEVICES $SLURM_STEP_GPUS"],
                             env=c.env(), capture_output=True, text=True)
        print(out.returncode, out.stdout, out.stderr, f"{time.monotonic() - started:.2f}s")
