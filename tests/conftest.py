"""Shared pytest fixtures: an isolated HOME, the real-SSH cluster, run_pegasus, run_in_process.

Two tiers: a test that needs root or real sshd processes is marked ``sshd``;
``python -m pytest -m "not sshd"`` runs the others. Both run on a pytest-xdist
worker a CPU and one more (``-n auto`` in pyproject.toml's addopts,
``pytest_xdist_auto_num_workers`` here); each worker that reaches sshd has a
cluster of its own (the cluster is a session fixture, on the worker's own
addresses: cluster.FIRST_IP). Every test that uses the
``cluster`` fixture (directly or through another fixture) is marked here; a
test that gets sshd another way says so with ``pytest.mark.sshd``. An unmarked
test that reaches sshd all the same fails, wherever it runs: through
``helpers.cluster_or_skip``, or the cluster by ``request.getfixturevalue``.

Does not import the ``pegasus`` package, so the fixture tests run even while
the package is incomplete.
"""
import collections
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile

import pytest
from hypothesis import settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster import Cluster, empty_test_home  # noqa: E402
from helpers import (HYPOTHESIS_PROFILE, can_run_cluster_or_skip, cluster_or_skip,  # noqa: E402
                     require_sshd_mark, run_in_process, running_test, unavailable)
from slurmcluster import SlurmCluster, SlurmUnavailable, why_unavailable  # noqa: E402

# A property without its own count runs hypothesis's 100 examples under "ci";
# those with one ask helpers.examples(full count), a fifth of it under "dev".
settings.register_profile("ci", max_examples=100)
settings.register_profile("dev", max_examples=20)
settings.load_profile(HYPOTHESIS_PROFILE)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: a worker a CPU and one more: tests mostly wait (for sshd, for
    Pegasus processes, for timeouts). Measured on 2 cores: the fast tier and the
    whole suite were quickest with 3. Each worker that reaches sshd starts a
    cluster of its own (its own addresses and user, cluster.FIRST_IP)."""
    return (os.cpu_count() or 1) + 1


def pytest_configure(config):
    """A suite started in the background by a script (``cmd &``) inherits SIGINT
    ignored, and so would every Pegasus and editor its tests start: their Ctrl-c
    would do nothing (a lock-mode test then waited 60 s). Ctrl-c is Python's again."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _keep_bytecode()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        config.pluginmanager.register(LongestFilesFirst(), "longest-files-first")


def _keep_bytecode():
    """Bytecode kept in a cache folder of this user's, outside the tree, even under
    PYTHONDONTWRITEBYTECODE: else every xdist worker rewrites and compiles every test
    file (some 3.5 s of CPU each) and every ``python -m pegasus`` the tests start
    compiles Pegasus again (some 0.08 s each). Set here, before the workers start,
    so they and every process the tests start inherit it."""
    prefix = os.environ.get("PYTHONPYCACHEPREFIX") or _own_folder(
        os.path.join(tempfile.gettempdir(), "pegasus-pycache-%d" % os.getuid()))
    if prefix is None:
        return
    os.environ["PYTHONPYCACHEPREFIX"] = sys.pycache_prefix = prefix
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False


def _own_folder(path):
    """``path``, a folder made if need be, if only this user can write there; else None."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError:
        return None
    mine = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
    return path if mine and not info.st_mode & 0o022 else None


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    """Mark ``sshd`` every test that uses the ``cluster`` fixture. Deselect the
    tests marked ``docker`` unless ``-m`` names them (docker/ci.sh runs them against
    the compose cluster it brings up)."""
    for item in items:
        if "cluster" in item.fixturenames:
            item.add_marker(pytest.mark.sshd)
        if "slurm_cluster" in item.fixturenames:  # root and daemons: the sshd tier too
            item.add_marker(pytest.mark.slurm)
            item.add_marker(pytest.mark.sshd)
    if "docker" not in (config.getoption("markexpr") or ""):
        docker = [item for item in items if item.get_closest_marker("docker")]
        if docker:
            config.hook.pytest_deselected(items=docker)
            items[:] = [item for item in items if item.get_closest_marker("docker") is None]


class LongestFilesFirst:
    """On xdist workers, files come longest first, by their tests' rough cost in
    seconds (``SLOW``, 3, a test marked slow; ``OTHER``, 0.05, another); else as
    collected. Workers take whole files in this order (``--dist loadfile``), and a
    long file taken last would end the run alone. A plugin of its own: it runs
    after ``-m`` deselected tests (trylast), so only the tests that run count."""

    SLOW, OTHER = 3.0, 0.05

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items):
        cost = collections.Counter()
        for item in items:
            cost[item.path] += self.SLOW if item.get_closest_marker("slow") else self.OTHER
        items.sort(key=lambda item: -cost[item.path])  # stable: a file keeps its order


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures are set up
def pytest_runtest_setup(item):
    running_test(item.nodeid, item.get_closest_marker("sshd") is not None)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep every test away from the user's ~/.ssh (config, keys, agent)."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.fixture(autouse=True)
def _own_tmpdir(monkeypatch):
    """TMPDIR of the processes a test starts (lock mode's private copy of the queue,
    ``pegasus-edit-*``, outlives a ``kill -9``): a folder of the test's own,
    removed after it, never left in /tmp. Searchable by all (0711): a benchmark's
    cluster under it must be readable by the test user's sshd."""
    path = tempfile.mkdtemp(prefix="pgtmp-", dir="/tmp")
    os.chmod(path, 0o711)
    monkeypatch.setenv("TMPDIR", path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _private_runtime_dir(monkeypatch):
    """Each test's own XDG_RUNTIME_DIR, where a running Pegasus puts its control
    socket (short: a socket's path has at most 107 bytes)."""
    path = tempfile.mkdtemp(prefix="pgrt-", dir="/tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _sshd_needs_its_mark(request):
    """Fail an unmarked test that got the cluster with request.getfixturevalue."""
    yield
    if "cluster" in request.fixturenames:
        require_sshd_mark()


@pytest.fixture(scope="session")
def cluster():
    """4 real sshd nodes (node-1 .. node-4), started once per session (per xdist
    worker: each on its own addresses, with its own test user, cluster.FIRST_IP).

    Uses the external cluster named by PEGASUS_TEST_SSH_CONFIG and
    PEGASUS_TEST_NODES when those are set.  If this machine cannot run sshd
    (not root, no /usr/sbin/sshd) the tests are skipped -- except under
    CI=true, where that is an error.
    """
    external = Cluster.external()
    if external is not None:
        yield external
        return
    # Not require_sshd_mark() here: this fixture's failure would be cached and
    # blamed on every later test; _sshd_needs_its_mark checks each test.
    can_run_cluster_or_skip()
    # Not under pytest's tmp_path: the test user must be able to read the
    # authorized_keys file, and pytest's base temp dir is mode 0700.
    workdir = tempfile.mkdtemp(prefix="pegasus-cluster-")
    # cluster.FIRST_IP: this worker's own addresses and user (PEGASUS_TEST_FIRST_IP
    # moves a whole suite, for two suites at once)
    c = Cluster(workdir, n_hosts=4)
    try:
        c.start()
        empty_test_home()  # the home jobs start in, as a fresh machine has it
        yield c
    finally:
        c.stop()
        if os.environ.get("PEGASUS_KEEP_CLUSTER"):
            sys.stderr.write("\nkept SSH test cluster files in %s\n" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def can_run_cluster():
    """For a test that starts its own sshd nodes (a benchmark's smoke run): this
    machine can run them, or the test is skipped (under CI=true: fails)."""
    cluster_or_skip()


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-machine Slurm cluster (``tests/slurmcluster.py``: 4 fake GPUs, partition
    ``pegtest``), started once per session (per xdist worker: its own ports; the
    Slurm tests share one file, so one worker starts it). Skipped where it cannot
    run (not root, no slurm-wlm/munge), except under CI=true: there it fails."""
    why = why_unavailable()
    if why:
        unavailable("the Slurm test cluster", why)
    workdir = tempfile.mkdtemp(prefix="pegasus-slurm-")
    slurm = SlurmCluster(workdir)
    try:
        try:
            slurm.start()
        except SlurmUnavailable as err:
            pytest.fail(f"the Slurm test cluster did not start: {err}", pytrace=False)
        yield slurm
    finally:
        slurm.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def run_pegasus():
    """Run the installed command: ``run(args, cwd, timeout=60, env=None, input=None)``.

    Runs ``[sys.executable, "-m", "pegasus", *args]`` with text output
    captured.  ``env`` entries are added to (not substituted for) the current
    environment, which already has the per-test HOME; a value of None removes
    that variable.  Without ``input`` stdin is /dev/null.
    """

    def run(args, cwd, timeout=60, env=None, input=None):
        full_env = dict(os.environ)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = str(value)
        return subprocess.run(
            [sys.executable, "-m", "pegasus", *[str(a) for a in args]],
            cwd=str(cwd),
            env=full_env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture(name="run_in_process")
def _run_in_process():
    """``run_pegasus`` without a process: ``pegasus.cli.main`` run in this one.

    The same call and result (see ``helpers.run_in_process``), some 0.5 s of
    CPU less a run. For runs checked by their exit status, messages and files;
    each file keeps some ``run_pegasus`` tests, so the real command stays covered.
    """
    return run_in_process
