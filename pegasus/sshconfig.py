"""Resolve an ssh_config host alias exactly as OpenSSH does.

parallel-ssh does not read ~/.ssh/config, so Pegasus asks OpenSSH itself:
``ssh -G [-F FILE] ALIAS`` prints the effective settings (Host and Match
blocks, defaults, %-tokens in HostName and UserKnownHostsFile) and exits
without connecting. This module owns running it, reading its output into a
frozen ``SshTarget``, and refusing the settings Pegasus cannot honour
(ProxyCommand, ProxyJump chains). ``ssh -G`` prints IdentityFile unexpanded,
so the few ssh %-tokens are expanded here, with ssh's own rules (``~`` is the
passwd home directory, not $HOME).
"""

from __future__ import annotations

import functools
import hashlib
import os
import pwd
import re
import socket
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from .errors import HostConfigError, HostError

SSH_G_TIMEOUT = 30.0  # seconds; ``Match exec`` could otherwise hang us
_POLICIES = {"yes": "yes", "true": "yes", "accept-new": "accept-new",
             "ask": "accept-new",  # Pegasus cannot ask: learn, as accept-new
             "no": "no", "false": "no", "off": "no"}
_PROXY_HELP = "Use a single ProxyJump instead, or remove it"
_HOPS_HELP = "Pegasus supports one ProxyJump hop; use a single bastion, or remove it"

Settings = Dict[str, List[str]]  # lower-case keyword -> values, in ssh's order


@dataclass(frozen=True)
class SshTarget:
    alias: str
    hostname: str
    port: int
    user: str
    identity_files: Tuple[str, ...]  # expanded; only files that exist
    identities_only: bool
    known_hosts_files: Tuple[str, ...]  # user files (first gets new keys), global
    strict_host_key_checking: str  # "yes", "accept-new" or "no"
    hash_known_hosts: bool
    host_key_alias: Optional[str]
    connect_timeout: Optional[float]
    server_alive_interval: Optional[int]  # None when 0 (disabled)
    proxy_jump: Optional["SshTarget"]  # the one bastion, itself resolved


def resolve(alias: str, config_file: Optional[str] = None) -> SshTarget:
    """The target ``ssh ALIAS`` would connect to (cached per process)."""
    return _resolve(alias, config_file, None, None)


@functools.lru_cache(maxsize=None)
def _resolve(alias: str, config_file: Optional[str], user: Optional[str],
             port: Optional[int]) -> SshTarget:
    settings = _parse(alias, _run_ssh_g(alias, config_file, user, port))
    _refuse_proxy_command(alias, settings)
    jump = _first(settings, "proxyjump")
    bastion = None if jump is None else _resolve_bastion(alias, jump, config_file)
    return _target(alias, settings, bastion)


def _run_ssh_g(alias: str, config_file: Optional[str], user: Optional[str],
               port: Optional[int]) -> str:
    if not alias or alias.startswith("-") or alias != alias.strip():
        raise HostConfigError(alias or "''", "not a valid ssh host alias")
    argv = ["ssh", "-G"] + (["-F", config_file] if config_file else [])
    argv += (["-l", user] if user else []) + (["-p", str(port)] if port else [])
    try:
        done = subprocess.run(argv + ["--", alias], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=SSH_G_TIMEOUT)
    except FileNotFoundError:
        raise HostError(alias, "the OpenSSH client 'ssh' is not installed or "
                        "not on PATH; Pegasus needs it to read ssh_config") from None
    except subprocess.TimeoutExpired:
        raise HostError(alias, f"'ssh -G {alias}' did not finish in "
                        f"{SSH_G_TIMEOUT:g}s (a Match exec in ssh_config?)") from None
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        raise HostConfigError(alias, f"ssh cannot resolve it from ssh_config: {said}")
    return done.stdout.decode(errors="replace")


def _parse(alias: str, text: str) -> Settings:
    settings: Settings = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            settings.setdefault(key.lower(), []).append(value.strip())
    if "hostname" not in settings or "port" not in settings:
        raise HostError(alias, "'ssh -G' printed no hostname/port; is 'ssh' OpenSSH?")
    return settings


def _first(settings: Settings, key: str) -> Optional[str]:
    """The first value of ``key``; None when absent or ``none``."""
    values = settings.get(key)
    if not values or values[0].lower() == "none" or not values[0]:
        return None
    return values[0]


def _refuse_proxy_command(alias: str, settings: Settings) -> None:
    if _first(settings, "proxycommand") is not None:
        raise HostConfigError(alias, "ProxyCommand is set in ssh_config; Pegasus "
                              f"cannot use ProxyCommand. {_PROXY_HELP}")


def parse_jump(spec: str) -> Tuple[Optional[str], str, Optional[int]]:
    """``[ssh://][user@]host[:port]`` (host may be ``[v6addr]``) -> parts."""
    rest = spec[len("ssh://"):] if spec.startswith("ssh://") else spec
    user, _, hostport = rest.rpartition("@")
    match = re.fullmatch(r"\[([^\]]+)\](?::([^:]*))?|([^:\[\]]+)(?::([^:]*))?", hostport)
    if match:
        host, port = match.group(1) or match.group(3), match.group(2) or match.group(4)
    elif hostport.count(":") > 1 and not set("[]") & set(hostport):  # bare IPv6
        host, port = hostport, None
    else:
        raise ValueError(f"cannot read ProxyJump {spec!r}")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port in ProxyJump {spec!r}")
    return user or None, host, int(port) if port else None


def _resolve_bastion(alias: str, jump: str, config_file: Optional[str]) -> SshTarget:
    if "," in jump:
        raise HostConfigError(alias, f"ProxyJump {jump} has several hops. {_HOPS_HELP}")
    try:
        user, host, port = parse_jump(jump)
        bastion = _resolve(host, config_file, user, port)
    except ValueError as err:
        raise HostConfigError(alias, str(err)) from None
    except HostError as err:
        raise type(err)(alias, f"ProxyJump host {jump}: {err.reason}") from None
    if bastion.proxy_jump is not None:
        raise HostConfigError(alias, f"its ProxyJump host {host} has a ProxyJump "
                              f"of its own ({bastion.proxy_jump.alias}). {_HOPS_HELP}")
    return bastion


def _target(alias: str, settings: Settings, bastion: Optional[SshTarget]) -> SshTarget:
    first = functools.partial(_first, settings)
    return SshTarget(
        alias=alias, hostname=settings["hostname"][0],
        port=int(settings["port"][0]), user=settings.get("user", [_local_user()])[0],
        identity_files=_identity_files(alias, settings),
        identities_only=_yes(first("identitiesonly")),
        known_hosts_files=_known_hosts_files(settings),
        strict_host_key_checking=_policy(alias, first("stricthostkeychecking")),
        hash_known_hosts=_yes(first("hashknownhosts")),
        host_key_alias=first("hostkeyalias"),
        connect_timeout=_number(first("connecttimeout"), float),
        server_alive_interval=_number(first("serveraliveinterval"), int),
        proxy_jump=bastion)


def _yes(value: Optional[str]) -> bool:
    return (value or "").lower() in ("yes", "true")


def _number(value: Optional[str], kind: type):
    try:
        number = kind(value) if value is not None else None
    except ValueError:
        return None
    return number if number else None  # 0 means "disabled" in ssh_config


def _policy(alias: str, value: Optional[str]) -> str:
    policy = _POLICIES.get((value or "ask").lower())
    if policy is None:
        raise HostConfigError(alias, f"StrictHostKeyChecking {value} is not understood")
    return policy


def _known_hosts_files(settings: Settings) -> Tuple[str, ...]:
    user = " ".join(settings.get("userknownhostsfile", [])).split()
    system = " ".join(settings.get("globalknownhostsfile", [])).split()
    # UserKnownHostsFile none: nothing is recorded, as with /dev/null.
    user = [os.devnull if f.lower() == "none" else f for f in user] or [os.devnull]
    system = [f for f in system if f.lower() != "none"]
    return tuple(_tilde(f) for f in user + system)


def _identity_files(alias: str, settings: Settings) -> Tuple[str, ...]:
    tokens = _tokens(alias, settings)
    paths = (_expand(raw, tokens) for raw in settings.get("identityfile", [])
             if raw.lower() != "none")
    return tuple(dict.fromkeys(p for p in paths if os.path.isfile(p)))


def _tokens(alias: str, settings: Settings) -> Dict[str, str]:
    """The %-tokens ssh expands in IdentityFile (ssh.c, client percent args)."""
    account = pwd.getpwuid(os.getuid())
    this_host = socket.gethostname()
    host, port = settings["hostname"][0], settings["port"][0]
    user = settings.get("user", [account.pw_name])[0]
    jump = _first(settings, "proxyjump") or ""
    jump = "" if "," in jump else _jump_host(jump)
    # %C is sha1(%l%h%p%r) up to OpenSSH 9.5; later ones append %j (rare: ignored)
    conn_hash = hashlib.sha1((this_host + host + port + user).encode()).hexdigest()
    return {"%": "%", "C": conn_hash, "L": this_host.split(".")[0],
            "i": str(os.getuid()), "k": _first(settings, "hostkeyalias") or alias,
            "l": this_host, "n": alias, "p": port, "d": account.pw_dir, "h": host,
            "r": user, "u": account.pw_name, "j": jump}


def _jump_host(jump: str) -> str:
    try:
        return parse_jump(jump)[1] if jump else ""
    except ValueError:
        return ""


def _expand(raw: str, tokens: Dict[str, str]) -> str:
    path = re.sub(r"\$\{(\w+)\}", lambda m: os.environ.get(m.group(1), m.group(0)),
                  _tilde(raw))  # ${ENV} first, then %-tokens, as ssh does
    return re.sub(r"%(.)", lambda m: tokens.get(m.group(1), m.group(0)), path)


def _tilde(path: str) -> str:
    """``~`` and ``~user`` as ssh expands them: from the passwd database."""
    if path == "~" or path.startswith("~/"):
        return pwd.getpwuid(os.getuid()).pw_dir + path[1:]
    if path.startswith("~"):
        name, _, rest = path[1:].partition("/")
        try:
            return os.path.join(pwd.getpwnam(name).pw_dir, rest)
        except KeyError:
            return path
    return path


def _local_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name
