#!/usr/bin/env python3
"""Install Pegasus for this user, without root: ``python3 install.py``.

Puts Pegasus and its dependencies in a virtual environment of their own,
``~/.local/share/pegasus/venv`` (``$XDG_DATA_HOME/pegasus/venv`` when that is
set), and a ``pegasus`` link to its command in ``~/.local/bin``. Running it
again updates the install from this folder.

It works where ``pip install`` is refused (PEP 668, "externally-managed-
environment": Debian 12, Ubuntu 24.04) and where Python has no pip and no
``ensurepip`` (Debian and Ubuntu without python3-pip and python3-venv): the
environment is then made without pip, and pip comes from PyPI's pip wheel
(its SHA-256 checked against PyPI's), run straight from the wheel file.
Needs Python 3.9+ and PyPI (or the index pip is configured for).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

PROJECT = Path(__file__).resolve().parent
SOURCES = ["pyproject.toml", "README.md", "pegasus"]  # what pip needs to build Pegasus
PIP_JSON = "https://pypi.org/pypi/pip/json"
QUIET_PIP = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


class InstallError(Exception):
    """A step failed; the message says which and what to do."""


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", type=Path, default=data / "pegasus" / "venv",
                    help="the virtual environment to create or update (default: %(default)s)")
    ap.add_argument("--bin-dir", type=Path, default=Path.home() / ".local" / "bin",
                    help="where the pegasus command goes (default: %(default)s)")
    ap.add_argument("--pip-wheel", type=Path,
                    help="a pip wheel file to use when Python has no pip (default: "
                         "the newest from PyPI that runs on this Python)")
    return ap.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if sys.version_info < (3, 9):
            raise InstallError("Pegasus needs Python 3.9 or later; this is "
                               + sys.version.split()[0])
        python = make_venv(args.venv)
        ensure_pip(python, args.pip_wheel)
        install_pegasus(python)
        link = link_command(args.venv, args.bin_dir)
    except InstallError as err:
        print(f"install.py: {err}", file=sys.stderr)
        return 1
    report(link)
    return 0


# ------------------------------------------------------------ the environment

def make_venv(venv: Path) -> Path:
    """Create the environment (without pip), or reuse it if it runs this Python."""
    python = venv / "bin" / "python"
    if _runs_this_python(python):
        say(f"updating {venv}")
        return python
    say(f"creating {venv}")
    run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)],
        "cannot create a virtual environment (Python's venv module is missing?)")
    return python


def _runs_this_python(python: Path) -> bool:
    """The environment exists and runs this Python's version (else re-create)."""
    code = "import sys; print(sys.version_info[:2])"
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                             timeout=60)
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.strip() == str(sys.version_info[:2])


def ensure_pip(python: Path, wheel: Optional[Path]) -> None:
    """pip in the environment: from ensurepip where Python has it, else a pip wheel."""
    if _succeeds([str(python), "-m", "pip", "--version"]):
        return
    if _succeeds([str(python), "-m", "ensurepip", "--default-pip"]):
        return
    say("this Python has no ensurepip: bootstrapping pip from its wheel")
    with tempfile.TemporaryDirectory(prefix="pegasus-install-") as scratch:
        wheel = wheel or download_pip_wheel(Path(scratch))
        # A wheel is a zip file Python can run pip from: pip installs itself.
        run([str(python), f"{wheel}/pip", "install", "--no-index", "--quiet", str(wheel)],
            f"cannot install pip from {wheel}")


def download_pip_wheel(folder: Path) -> Path:
    """The newest pip wheel on PyPI that runs on this Python, its hash checked."""
    say(f"asking {PIP_JSON} for pip")
    releases = json.loads(_fetch(PIP_JSON))["releases"]
    name, url, sha256 = pick_pip_wheel(releases, sys.version_info[:3])
    url = urllib.parse.urljoin(PIP_JSON, url)  # a mirror may give it relative
    data = _fetch(url)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise InstallError(f"{url}: the download does not match PyPI's SHA-256; try again")
    path = folder / name
    path.write_bytes(data)
    say(f"downloaded {name}")
    return path


def pick_pip_wheel(releases: dict, version: Tuple[int, ...]) -> Tuple[str, str, str]:
    """(file name, url, sha256) of the newest non-yanked pip wheel for ``version``."""
    wheels = [(_version_key(number), f) for number, files in releases.items()
              for f in files if f["filename"].endswith(".whl") and not f.get("yanked")
              and _version_key(number) and python_ok(f.get("requires_python"), version)]
    if not wheels:
        raise InstallError("PyPI lists no pip wheel for this Python")
    _, best = max(wheels, key=lambda pair: pair[0])
    return best["filename"], best["url"], best["digests"]["sha256"]


def _version_key(number: str) -> Optional[Tuple[int, ...]]:
    """A final release's version as numbers (None for a pre-release)."""
    if not re.fullmatch(r"\d+(\.\d+)*", number):
        return None
    return tuple(int(part) for part in number.split("."))


def python_ok(requires: Optional[str], version: Tuple[int, ...]) -> bool:
    """Whether ``version`` meets a Requires-Python of simple clauses (``>=3.9,!=3.9.0``)."""
    compare = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b,
               "<=": lambda a, b: a <= b, "<": lambda a, b: a < b,
               "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
    for clause in (requires or "").split(","):
        match = re.fullmatch(r"\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)(\.\*)?\s*", clause)
        if not match:
            continue  # a form we do not read: let pip judge
        op, number, star = match.groups()
        wanted = tuple(int(p) for p in number.split("."))
        mine = version[:len(wanted)] if star or op in ("==", "!=") else version
        if not compare[op](tuple(mine), wanted):
            return False
    return True


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except (OSError, ValueError) as err:
        raise InstallError(f"cannot download {url}: {err}; check the network, or give "
                           "a pip wheel with --pip-wheel FILE") from None


# ------------------------------------------------------------ Pegasus

def install_pegasus(python: Path) -> None:
    """pip-install this folder's Pegasus (built from a copy: the clone stays clean)."""
    say(f"installing Pegasus from {PROJECT} and its dependencies")
    with tempfile.TemporaryDirectory(prefix="pegasus-src-") as scratch:
        for name in SOURCES:
            source = PROJECT / name
            copy = shutil.copytree if source.is_dir() else shutil.copy2
            copy(source, Path(scratch) / name)
        # pip always reinstalls a folder; dependencies it has stay as they are.
        run([str(python), "-m", "pip", "install", "--quiet", scratch],
            "cannot install Pegasus")


def link_command(venv: Path, bin_dir: Path) -> Path:
    """``bin_dir/pegasus`` -> the environment's ``pegasus`` (never over another program)."""
    target, link = venv / "bin" / "pegasus", bin_dir / "pegasus"
    if (link.exists() or link.is_symlink()) and not _ours(link):
        raise InstallError(f"{link} exists and is not a Pegasus command: remove it, or "
                           "choose another folder with --bin-dir DIR")
    bin_dir.mkdir(parents=True, exist_ok=True)
    partial = bin_dir / ".pegasus.partial"
    if partial.is_symlink() or partial.exists():
        partial.unlink()
    partial.symlink_to(target)
    os.replace(partial, link)
    return link


def _ours(link: Path) -> bool:
    """A link into a Pegasus environment, or pip's console script for Pegasus."""
    if link.is_symlink():
        return Path(os.readlink(link)).name == "pegasus"
    try:
        return "pegasus.cli" in link.read_text(errors="replace")[:4096]
    except OSError:
        return False


def report(link: Path) -> None:
    version = subprocess.run([str(link), "--version"], capture_output=True, text=True)
    say(f"installed {version.stdout.strip() or 'Pegasus'}: {link}")
    folders = [os.path.realpath(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    if os.path.realpath(link.parent) in folders:
        return
    login = login_file()
    if link.parent == Path.home() / ".local" / "bin" and _adds_local_bin(login):
        say(f"{link.parent} is not on your PATH yet: {login} adds it at your next "
            f"login; until then run {link}")
        return
    say(f"{link.parent} is not on your PATH: run {link}, or add "
        f"'export PATH=\"{link.parent}:$PATH\"' to {login}")


def login_file() -> Path:
    """The file a login shell reads: bash reads the first of these that exists."""
    home = Path.home()
    if os.path.basename(os.environ.get("SHELL", "")) == "bash":
        for name in (".bash_profile", ".bash_login"):
            if (home / name).exists():
                return home / name
    return home / ".profile"


def _adds_local_bin(login: Path) -> bool:
    """Whether that file puts ~/.local/bin on the PATH (Debian's and Ubuntu's
    ~/.profile for a new user does; root's does not)."""
    try:
        text = login.read_text(errors="replace")
    except OSError:
        return False
    return any(".local/bin" in line and "PATH" in line and not line.lstrip().startswith("#")
               for line in text.splitlines())


# ------------------------------------------------------------ helpers

def say(text: str) -> None:
    print(f"install.py: {text}", flush=True)


def run(argv: List[str], failure: str) -> None:
    env = dict(os.environ, **QUIET_PIP)
    try:
        code = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL).returncode
    except OSError as err:
        raise InstallError(f"{failure}: {err}") from None
    if code != 0:
        raise InstallError(f"{failure} (exit status {code} from: {' '.join(argv)})")


def _succeeds(argv: List[str]) -> bool:
    return subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL).returncode == 0


if __name__ == "__main__":
    sys.exit(main())
