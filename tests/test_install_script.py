"""install.py's pieces that need no network: choosing pip's wheel, the link."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "install.py"
spec = importlib.util.spec_from_file_location("install_script", SCRIPT)
install = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install)


def wheel(version, requires=None, yanked=False, kind="py3-none-any.whl"):
    name = f"pip-{version}-{kind}"
    return {"filename": name, "url": f"https://files.example/{name}", "yanked": yanked,
            "requires_python": requires, "digests": {"sha256": f"sha-{version}"}}


@pytest.mark.parametrize("requires,version,ok", [
    (None, (3, 9, 0), True), ("", (3, 9, 0), True), (">=3.9", (3, 9, 2), True),
    (">=3.10", (3, 9, 18), False), (">=3.7,!=3.8.0", (3, 8, 0), False),
    (">=2.7,!=3.0.*,!=3.1.*", (3, 1, 4), False), (">=2.7,!=3.0.*", (3, 11, 2), True),
    ("<3.12", (3, 12, 0), False), ("~=3.8", (3, 11, 0), True),
])
def test_requires_python(requires, version, ok):
    assert install.python_ok(requires, version) is ok


def test_the_newest_pip_wheel_this_python_can_run():
    releases = {
        "23.3.2": [wheel("23.3.2", ">=3.7"), {**wheel("23.3.2"), "filename": "pip-23.3.2.tar.gz"}],
        "24.0": [wheel("24.0", ">=3.7")],
        "24.1b1": [wheel("24.1b1", ">=3.8")],  # a pre-release is never chosen
        "24.0.1": [wheel("24.0.1", ">=3.7", yanked=True)],
        "26.0": [wheel("26.0", ">=3.10")],
    }
    assert install.pick_pip_wheel(releases, (3, 9, 2)) == (
        "pip-24.0-py3-none-any.whl", "https://files.example/pip-24.0-py3-none-any.whl",
        "sha-24.0")
    assert install.pick_pip_wheel(releases, (3, 11, 2))[0] == "pip-26.0-py3-none-any.whl"
    with pytest.raises(install.InstallError):
        install.pick_pip_wheel({"1.0": [wheel("1.0", ">=4")]}, (3, 9, 0))


def test_the_link_replaces_a_pegasus_link_but_never_another_program(tmp_path):
    venv, bin_dir = tmp_path / "venv", tmp_path / "bin"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "pegasus").write_text("#!/bin/sh\n")
    bin_dir.mkdir()
    (bin_dir / "pegasus").symlink_to(tmp_path / "old-venv" / "bin" / "pegasus")
    link = install.link_command(venv, bin_dir)
    assert link.resolve() == (venv / "bin" / "pegasus").resolve()
    link.unlink()
    link.write_text("#!/bin/sh\nexec some-other-pegasus\n")
    with pytest.raises(install.InstallError, match="not a Pegasus command"):
        install.link_command(venv, bin_dir)
    assert link.read_text() == "#!/bin/sh\nexec some-other-pegasus\n"


SKEL_PROFILE = """\
# set PATH so it includes user's private bin if it exists
if [ -d "$HOME/.local/bin" ] ; then
    PATH="$HOME/.local/bin:$PATH"
fi
"""
ROOT_PROFILE = """\
if [ "$BASH" ]; then
  if [ -f ~/.bashrc ]; then
    . ~/.bashrc
  fi
fi
mesg n 2> /dev/null || true
"""


def _installed(home, monkeypatch, profile=None, shell="/bin/bash", others=()):
    """A home with this ~/.profile (and other login files) and a pegasus in ~/.local/bin."""
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SHELL", shell)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    if profile is not None:
        (home / ".profile").write_text(profile)
    for name in others:
        (home / name).write_text("# mine\n")
    link = home / ".local" / "bin" / "pegasus"
    link.parent.mkdir(parents=True)
    link.write_text("#!/bin/sh\necho pegasus 9.9\n")
    link.chmod(0o755)
    return link


def _hint(capsys):
    return capsys.readouterr().out.splitlines()[1:]


def test_the_path_hint_promises_the_next_login_only_when_the_profile_does_it(
        tmp_path, monkeypatch, capsys):
    link = _installed(tmp_path, monkeypatch, SKEL_PROFILE)
    install.report(link)
    assert _hint(capsys) == [
        f"install.py: {link.parent} is not on your PATH yet: {tmp_path}/.profile adds it "
        f"at your next login; until then run {link}"]


def test_roots_profile_does_not_add_local_bin_so_the_hint_says_where_to_add_it(
        tmp_path, monkeypatch, capsys):
    """Debian's /root/.profile has no ~/.local/bin: no promise of the next login."""
    link = _installed(tmp_path, monkeypatch, ROOT_PROFILE)
    install.report(link)
    said = _hint(capsys)
    assert said == [
        f"install.py: {link.parent} is not on your PATH: run {link}, or add "
        f"'export PATH=\"{link.parent}:$PATH\"' to {tmp_path}/.profile"]


def test_the_path_hint_names_the_file_bash_reads_at_login(tmp_path, monkeypatch, capsys):
    link = _installed(tmp_path, monkeypatch, SKEL_PROFILE, others=[".bash_profile"])
    install.report(link)
    assert _hint(capsys) == [
        f"install.py: {link.parent} is not on your PATH: run {link}, or add "
        f"'export PATH=\"{link.parent}:$PATH\"' to {tmp_path}/.bash_profile"]


def test_no_path_hint_when_the_folder_is_on_path(tmp_path, monkeypatch, capsys):
    link = _installed(tmp_path, monkeypatch, ROOT_PROFILE)
    monkeypatch.setenv("PATH", f"/usr/bin:{link.parent}")
    install.report(link)
    assert _hint(capsys) == []
