"""A YAML syntax error names the line to fix, not where PyYAML noticed it."""

import subprocess
import sys

import pytest

from pegasus.errors import InputError
from pegasus.yamltree import read_all

# (file text, the line holding the mistake); PyYAML notices most of these
# one or more lines later.
MALFORMED = {
    "dash-without-space": ("- echo one\n-echo two\n- echo three\n", 2),
    "dash-without-space-last": ("- echo one\n-echo two\n", 2),
    "unclosed-bracket": ("- command: x\n  a: [1, 2\n- c\n", 2),
    "unclosed-bracket-two-lines": ("- command: x\n  a: [1,\n     2\n- c\n", 2),
    "unclosed-brace": ("- a\n- {command: x\n- c\n", 2),
    "unclosed-quote": ("- a\n- 'echo b\n- c\n- d\n", 2),
    "unclosed-double-quote-far": ("- a\n- \"echo b\n" + "- c\n" * 20, 2),
    "quote-runs-into-document-marker": ("- a\n- 'x\n---\n- c\n", 2),
    "key-indented-too-little": ("- command: x\n  a: 1\n b: 2\n- c\n", 3),
    "key-indented-too-much": ("- command: x\n  a: 1\n   b: 2\n- c\n", 3),
    "list-item-indented-wrong": ("- command:\n    - x\n   - y\n- c\n", 3),
    "mapping-after-list": ("- a\n- b\nc: d\n- e\n", 3),
    "tab-indentation": ("- a\n\t- b\n- c\n", 2),
    "colon-in-plain-value": ("- a\n- b: c: d\n- e\n", 2),
    "reserved-character": ("- a\n- @x\n- c\n", 2),
    "bracket-closed-by-brace": ("- a\n- [b, c}\n- d\n", 2),
    "bad-block-scalar-header": ("- a\n- |x\n  b\n- c\n", 2),
}


def line_of(message: str) -> int:
    return int(message.split(":")[1].split()[0])


@pytest.mark.parametrize("text,line", MALFORMED.values(), ids=MALFORMED.keys())
def test_syntax_error_names_the_line_to_fix(text, line):
    with pytest.raises(InputError) as err:
        read_all(text, "q.yaml")
    assert "YAML syntax error" in str(err.value)
    assert line_of(str(err.value)) == line, str(err.value)


def test_the_issue_example_from_the_command_line(tmp_path):
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    (tmp_path / "queue.yaml").write_text("- echo one\n-echo two\n- echo three\n")
    res = subprocess.run([sys.executable, "-m", "pegasus", "q"], cwd=str(tmp_path),
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith("pegasus: queue.yaml:2 (entry 2): YAML syntax error"), \
        res.stderr


@pytest.mark.parametrize("breaker", ["\x85", "\u2028", "\u2029", "\r"])
def test_an_entry_error_names_the_line_an_editor_shows(breaker):
    """A duplicate key (an entry's error, not a syntax error) after a quoted
    NEL, LS, PS or lone CR: YAML counts those as line breaks, an editor does not."""
    text = "- 'a%sb'\n- {k: 1, k: 2}\n" % breaker
    with pytest.raises(InputError) as err:
        read_all(text, "queue.yaml")
    assert str(err.value).startswith("queue.yaml:2 (entry 2): duplicate key 'k'"), str(err.value)
