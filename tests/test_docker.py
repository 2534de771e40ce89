"""docker/: what can be checked without a Docker engine.

The compose file parses and names node-1 .. node-4 on distinct local ports;
every file it and the Dockerfile reference exists (in the repository, or is
made by setup.sh); every node mounts the test fixture's own sshd_config where
the node's sshd_config includes it.  setup.sh makes the fixture's key layout
and an ssh_config that reaches the published ports.  Finally the node's sshd
configuration runs for real on a loopback address, with the bind mounts
emulated by path substitution, and accepts the generated client key.
"""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from cluster import SHARED_SSHD_CONFIG, SSHD, ensure_test_user
from helpers import cluster_or_skip

DOCKER = Path(__file__).resolve().parent.parent / "docker"
NODES = ["node-1", "node-2", "node-3", "node-4"]
GENERATED = "./cluster/"  # bind-mount sources under this folder are made by setup.sh
# The nodes' login user (the Dockerfile's, setup.sh's ``user=``), whatever user
# this suite's own cluster logs in as (PEGASUS_TEST_FIRST_IP gives it another).
DOCKER_USER = re.search(r"^user=(\S+)$", (DOCKER / "setup.sh").read_text(), re.M).group(1)


def compose():
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def node_services():
    return {name: service for name, service in compose()["services"].items() if name in NODES}


def mounts(service):
    """[(source, target)] of a service's bind mounts (short syntax)."""
    out = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        out.append((source, target))
    return out


def published_port(service):
    """The host port that publishes the service's port 22 on 127.0.0.1."""
    (spec,) = service["ports"]
    ip, host_port, container_port = spec.split(":")
    assert ip == "127.0.0.1" and container_port == "22", spec
    return int(host_port)


def node_sshd_paths():
    """keyword -> value of the absolute paths in docker/node_sshd_config."""
    paths = {}
    for line in (DOCKER / "node_sshd_config").read_text().splitlines():
        words = line.split()
        if len(words) == 2 and words[1].startswith("/") and not line.startswith("#"):
            paths[words[0]] = words[1]
    return paths


def resolve_in_container(path, service_mounts, base):
    """The file behind container ``path`` given the bind mounts, or None if not mounted."""
    for source, target in service_mounts:
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return (base / source / os.path.relpath(path, target)).resolve()
    return None


@pytest.fixture
def setup_copy():
    """docker/ and tests/sshd_config copied under /tmp, with setup.sh run in the copy.

    Under /tmp (world-searchable), so a test user can read authorized_keys.
    """
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed (openssh-client)")
    root = Path(tempfile.mkdtemp(prefix="pegasus-docker-"))
    os.chmod(root, 0o755)
    try:
        shutil.copytree(DOCKER, root / "docker", ignore=shutil.ignore_patterns("cluster"))
        (root / "tests").mkdir()
        shutil.copy2(SHARED_SSHD_CONFIG, root / "tests" / "sshd_config")
        res = subprocess.run(["sh", str(root / "docker" / "setup.sh")], capture_output=True,
                             text=True, stdin=subprocess.DEVNULL, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        yield root / "docker"
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- static checks

def test_compose_names_the_fixture_nodes_on_distinct_local_ports():
    services = compose()["services"]
    assert sorted(services) == sorted(NODES + ["jump"])
    ports = [published_port(services[n]) for n in NODES]
    assert len(set(ports)) == len(ports)
    assert "ports" not in services["jump"]  # reached with docker exec only


def test_compose_file_has_only_keys_compose_1_29_accepts():
    """Debian 12's docker-compose 1.29 refuses a top-level ``name:`` ('name' does not
    match any of the regexes: '^x-'); the project name is in .env, read by both."""
    allowed = {"version", "services", "networks", "volumes", "configs", "secrets"}
    assert [k for k in compose() if k not in allowed and not k.startswith("x-")] == []
    env = dict(line.split("=", 1) for line in (DOCKER / ".env").read_text().split())
    assert env["COMPOSE_PROJECT_NAME"] == "pegasus-cluster"


@pytest.mark.parametrize("command", [["docker-compose"], ["docker", "compose"]],
                         ids=["docker-compose", "docker compose"])
def test_installed_compose_accepts_the_file_and_names_the_project(command, setup_copy):
    """Each compose spelling found here reads compose.yaml and .env as they are meant."""
    if shutil.which(command[0]) is None:
        pytest.skip("%s is not installed" % command[0])
    version = subprocess.run(command + ["version"], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=60)
    if version.returncode != 0:
        pytest.skip("%s is not installed (%s version failed)" % (" ".join(command), " ".join(command)))
    res = subprocess.run(command + ["config"], cwd=str(setup_copy), capture_output=True,
                         text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert res.returncode == 0, res.stderr
    config = yaml.safe_load(res.stdout)
    assert sorted(config["services"]) == sorted(NODES + ["jump"])
    if "name" in config:  # v2 prints the project's name; 1.29 does not (the docker tier
        assert config["name"] == "pegasus-cluster"  # finds its containers by that name)


def test_every_build_context_and_dockerfile_exists():
    for name, service in compose()["services"].items():
        context = DOCKER / service["build"] if isinstance(service["build"], str) \
            else DOCKER / service["build"].get("context", ".")
        dockerfile = "Dockerfile" if isinstance(service["build"], str) \
            else service["build"].get("dockerfile", "Dockerfile")
        assert (context / dockerfile).is_file(), name
        for line in (context / dockerfile).read_text().splitlines():
            if line.startswith(("COPY ", "ADD ")):
                for source in line.split()[1:-1]:
                    assert (context / source).exists(), "%s: %s" % (name, line)


def test_static_mount_sources_exist_in_the_repository():
    for name, service in compose()["services"].items():
        for source, _ in mounts(service):
            if not source.startswith(GENERATED):
                assert (DOCKER / source).exists(), "%s mounts missing %s" % (name, source)


def test_every_node_uses_the_fixture_sshd_config():
    include = node_sshd_paths()["Include"]
    for name, service in node_services().items():
        assert resolve_in_container(include, mounts(service), DOCKER) == Path(SHARED_SSHD_CONFIG).resolve(), name


# ---------------------------------------------------------------- setup.sh

def test_setup_makes_every_generated_mount_source(setup_copy):
    for name, service in node_services().items():
        for source, _ in mounts(service):
            assert (setup_copy / source).exists(), "%s: setup.sh did not make %s" % (name, source)
        paths = node_sshd_paths()
        for keyword in ("HostKey", "AuthorizedKeysFile", "Include"):
            assert resolve_in_container(paths[keyword], mounts(service), setup_copy).is_file(), keyword


def test_setup_writes_the_fixture_key_layout(setup_copy):
    cluster_dir = setup_copy / "cluster"
    for name in ("ssh_config", "known_hosts", "client_key", "client_key.pub", "authorized_keys"):
        assert (cluster_dir / name).is_file(), name
    assert (cluster_dir / "authorized_keys").read_text() == (cluster_dir / "client_key.pub").read_text()
    keys = {(cluster_dir / n / "ssh_host_ed25519_key.pub").read_text() for n in NODES}
    assert len(keys) == len(NODES)  # one host key per node


def test_setup_is_idempotent(setup_copy):
    before = {p: p.read_bytes() for p in (setup_copy / "cluster").rglob("*") if p.is_file()}
    subprocess.run(["sh", str(setup_copy / "setup.sh")], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=60)
    after = {p: p.read_bytes() for p in (setup_copy / "cluster").rglob("*") if p.is_file()}
    assert after == before


def test_ssh_config_reaches_the_published_ports(setup_copy):
    if shutil.which("ssh") is None:
        pytest.skip("ssh not installed (openssh-client)")
    config = setup_copy / "cluster" / "ssh_config"
    services = compose()["services"]
    for node in NODES:
        res = subprocess.run(["ssh", "-G", "-F", str(config), node], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=30)
        assert res.returncode == 0, res.stderr
        resolved = dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)
        assert resolved["hostname"] == "127.0.0.1"
        assert int(resolved["port"]) == published_port(services[node])
        assert resolved["user"] == DOCKER_USER
        assert resolved["identityfile"] == str(setup_copy / "cluster" / "client_key")
        assert resolved["stricthostkeychecking"] in ("accept-new", "new")


# ---------------------------------------------------------------- the node's sshd, for real

def node_config_for_host(setup_copy, service, listen):
    """node_sshd_config with the bind mounts resolved to files of ``setup_copy``."""
    text = (DOCKER / "node_sshd_config").read_text()
    for keyword, path in node_sshd_paths().items():
        resolved = resolve_in_container(path, mounts(service), setup_copy)
        if resolved is None:  # not mounted: a file of the container itself
            resolved = setup_copy / "run" / os.path.basename(path)
        text = re.sub(r"(?m)^%s %s$" % (keyword, re.escape(path)),
                      lambda _: "%s %s" % (keyword, resolved), text)
    text = text.replace("ListenAddress 0.0.0.0:22", "ListenAddress %s:%d" % listen)
    return text


@pytest.mark.sshd
def test_node_sshd_config_accepts_the_generated_client_key(setup_copy):
    """sshd runs the node's configuration and lets the client key of setup.sh in."""
    cluster_or_skip()
    ensure_test_user(DOCKER_USER)
    (setup_copy / "run").mkdir()
    listen = ("127.0.0.9", 22000 + os.getpid() % 5000)
    config = setup_copy / "run" / "sshd_config"
    config.write_text(node_config_for_host(setup_copy, compose()["services"]["node-1"], listen))
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        login = login_when_up(setup_copy / "cluster" / "ssh_config", listen)
        assert login.returncode == 0, login.stderr
        assert login.stdout.strip() == DOCKER_USER
    finally:
        os.killpg(sshd.pid, signal.SIGTERM)
        sshd.wait(timeout=30)


def login_when_up(ssh_config, listen, tries=50):
    """``ssh node-1 id -un`` through the generated config, pointed at ``listen``."""
    cmd = ["ssh", "-F", str(ssh_config), "-o", "HostName=%s" % listen[0], "-o", "Port=%d" % listen[1],
           "-o", "LogLevel=ERROR", "node-1", "id -un"]
    for _ in range(tries):
        res = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
        if res.returncode == 0 or "Connection refused" not in res.stderr:
            return res
        time.sleep(0.1)
    return res
