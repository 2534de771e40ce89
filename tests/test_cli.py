"""The command line: usage, version, help, errors as words and exit statuses."""

import pytest

from pegasus import __version__
from pegasus.cli import main, parse_args


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pegasus {__version__}"


def test_help_lists_the_options(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--daemon", "--error-aborts", "--editor", "--print-period",
                   "--queue-file", "--hosts-file", "--ssh-config"):
        assert option in out


@pytest.mark.parametrize("argv", [[], ["x"], ["q", "--bogus"], ["q", "b"]])
def test_bad_usage_exits_2_with_usage(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pegasus: ") and "usage:" in err


def test_a_missing_ssh_config_file_is_named_not_blamed_on_a_host(capsys, tmp_path):
    missing = str(tmp_path / "nope")
    assert main(["q", "--ssh-config", missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pegasus: --ssh-config %s: no such file" % missing), err
    assert "host" not in err.split("\n")[0]


def test_print_period_must_be_a_number(capsys):
    assert main(["q", "-p", "x"]) == 2
    assert "--print-period" in capsys.readouterr().err


@pytest.mark.parametrize("text, seconds", [
    ("10", 10), ("10s", 10), ("90 s", 90), ("1m", 60), ("1.5m", 90), ("2H", 7200),
    ("1d", 86400), ("10m", 600)])
def test_orphan_timeout_takes_a_duration(text, seconds):
    assert parse_args(["q", "--orphan-timeout", text]).orphan_timeout == seconds


@pytest.mark.parametrize("text", ["1", "9", "9.9s", "0.1m", "0"])
def test_an_orphan_timeout_shorter_than_10_s_is_refused(text, capsys):
    """The node's watchdog would stop healthy jobs between two heartbeats."""
    assert main(["q", "--orphan-timeout", text]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pegasus: --orphan-timeout {text}: too short; it must be at "
                          "least 10 s"), err
    assert "heartbeat" in err


@pytest.mark.parametrize("text", ["soon", "-5", "10x", "1 h 2", ""])
def test_an_orphan_timeout_that_is_not_a_duration_is_refused(text, capsys):
    assert main(["q", f"--orphan-timeout={text}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pegasus: --orphan-timeout must be a duration (90, 90s, 30m, "
                          f"2h, 1d; at least 10 s), not '{text}'"), err


def test_options_are_parsed(tmp_path):
    cfg = tmp_path / "cfg"
    cfg.write_text("Host x\n")
    opts = parse_args(["q", "-d", "-p", "3", "-Q", "a.yaml", "-H", "b.yaml",
                       "--ssh-config", str(cfg)])
    assert (opts.mode, opts.daemon, opts.print_period, opts.queue_file,
            opts.hosts_file, opts.ssh_config) == ("q", True, 3, "a.yaml", "b.yaml", str(cfg))
    assert parse_args(["b", "-e"]).error_aborts
    assert parse_args(["l", "--editor", "code --wait"]).editor == "code --wait"


def test_defaults():
    opts = parse_args(["q"])
    assert (opts.queue_file, opts.hosts_file, opts.print_period, opts.daemon) == (
        "queue.yaml", "hosts.yaml", 1, False)


def test_missing_hosts_file_names_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "queue.yaml").write_text("- echo hi\n")
    assert main(["q"]) == 2
    err = capsys.readouterr().err
    assert "hosts.yaml" in err and "not found" in err
    assert (tmp_path / "queue.yaml").read_text() == "- echo hi\n"


@pytest.mark.parametrize("argv, name", [(["x"], "x"), (["q", "--bogus"], "--bogus")])
def test_usage_error_names_the_unknown_word(argv, name, capsys):
    assert main(argv) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first == f"pegasus: unknown mode or option: {name}"


# ---------------------------------------------------------------- issue 10 §7: messages

@pytest.mark.parametrize("argv, words", [
    (["kill"], "pegasus kill: give the id of each job to stop"),
    (["log"], "pegasus log: give the id of a job"),
    (["log", "-f"], "pegasus log: give the id of a job"),
])
def test_log_and_kill_without_an_id_say_the_id_is_missing(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith(f"pegasus: {words}"), err


@pytest.mark.parametrize("argv, names", [(["q", "-x"], "-x"), (["q", "-xyz"], "-x -y -z"),
                                         (["b", "-x", "--bogus"], "-x --bogus")])
def test_an_unknown_option_is_named_without_docopt_internals(argv, names, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"pegasus: unknown mode or option: {names}", err
    assert "Option(" not in err and "Warning" not in err


@pytest.mark.parametrize("argv, words", [
    (["q", "-e"], "-e/--error-aborts is for broadcast mode (b)"),
    (["q", "--error-aborts"], "-e/--error-aborts is for broadcast mode (b)"),
    (["l", "-e"], "-e/--error-aborts is for broadcast mode (b)"),
    (["requeue", "-e"], "-e/--error-aborts is for broadcast mode (b)"),
    (["q", "--editor", "vim"], "--editor is for lock mode (l)"),
    (["b", "--editor", "vim"], "--editor is for lock mode (l)"),
    (["l", "-d"], "-d/--daemon is for queue and broadcast modes (q, b)"),
    (["requeue", "--daemon"], "-d/--daemon is for queue and broadcast modes (q, b)"),
])
def test_an_option_of_another_mode_is_a_usage_error(argv, words, tmp_path, monkeypatch,
                                                    capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    (tmp_path / "queue.yaml").write_text(f"- touch {tmp_path / 'ran'}\n")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"pegasus: {words}", err
    assert "usage:" in err
    assert (tmp_path / "queue.yaml").read_text() == f"- touch {tmp_path / 'ran'}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hosts.yaml", "queue.yaml"]


@pytest.mark.parametrize("mode", ["status", "stop", "log 3", "kill 3", "requeue"])
@pytest.mark.parametrize("option", ["--limit", "--exclude=node-1"])
def test_limit_and_exclude_in_another_mode_say_which_modes_take_them(mode, option, capsys):
    assert main(mode.split() + option.split() + (["node-1"] if "=" not in option else [])) == 2
    err = capsys.readouterr().err
    name = option.split("=")[0]
    assert err.splitlines()[0] == f"pegasus: {name} is for queue and broadcast modes (q, b)", err


def test_a_bad_option_value_says_so_without_the_whole_usage(capsys):
    for argv in (["q", "--halt", "soon"], ["q", "--retries", "x"], ["q", "--timeout", "0"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"pegasus: {argv[1]} ") and "usage:" not in err, err


@pytest.mark.parametrize("mode", ["q", "b", "l", "requeue"])
def test_a_queue_file_in_a_missing_folder_names_the_folder(mode, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    assert main([mode, "-Q", "nosuch/queue.yaml", "--editor", "true"][:3 + 2 * (mode == "l")]) \
        == 2
    err = capsys.readouterr().err
    assert err == ("pegasus: -Q nosuch/queue.yaml: the folder nosuch does not exist; "
                   "create it or give another path\n"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hosts.yaml"]


def test_a_queue_file_in_a_folder_that_is_a_file_names_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notdir").write_text("x\n")
    assert main(["q", "-Q", "notdir/queue.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pegasus: -Q notdir/queue.yaml: notdir is not a folder"), err
