"""Reading YAML lists exactly as typed, with lines."""

import pytest

from pegasus.errors import InputError
from pegasus.yamltree import read_all, read_list


def values(text):
    return [item.value for item in read_all(text, "q.yaml")[1]]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "~\n", "null\n", "[]\n", "\n\n"])
def test_empty_files_are_empty_lists(text):
    assert values(text) == []


def test_scalars_stay_as_typed():
    text = "- a: [8, 16]\n  b: no\n  c: on\n  d: 0x10\n  e: 1:30\n  f: ~\n  g: 1e-3\n"
    assert values(text) == [{"a": ["8", "16"], "b": "no", "c": "on", "d": "0x10",
                             "e": "1:30", "f": "~", "g": "1e-3"}]


def test_quoted_values_lose_only_their_quotes():
    assert values("- a: '8'\n  b: \"x\\ty\"\n") == [{"a": "8", "b": "x\ty"}]


def test_duplicate_key_is_an_error_with_its_line():
    with pytest.raises(InputError) as err:
        values("- command: a\n  x: 1\n  x: 2\n")
    assert "q.yaml:3" in str(err.value) and "duplicate key 'x'" in str(err.value)


@pytest.mark.parametrize("tag", ["!!python/object:os.system", "!!python/name:os.system",
                                 "!custom", "!!binary"])
def test_tags_are_refused(tag):
    with pytest.raises(InputError) as err:
        values(f"- {tag} x\n")
    assert "tag" in str(err.value)


def test_syntax_error_names_file_and_line():
    with pytest.raises(InputError) as err:
        values("- a\n- b: [1,\n- c\n")
    assert str(err.value).startswith("q.yaml:") and "syntax" in str(err.value)


def test_top_level_must_be_a_list():
    with pytest.raises(InputError, match="must be a YAML list"):
        values("command: a\n")


def test_two_documents_are_refused():
    with pytest.raises(InputError, match="more than one YAML document"):
        values("- a\n---\n- b\n")


def test_items_carry_their_lines():
    _, items = read_all("# c\n- a\n-\n  command: x\n  y: [1,\n     2]\n- b # t\n", "q")
    assert [(i.first_line, i.last_line) for i in items] == [(1, 1), (3, 5), (6, 6)]


def test_reading_is_lazy_past_the_head():
    layout, items = read_list("- a\n- b\n- [unclosed\n", "q")
    assert next(items).value == "a"  # the bad third entry is not read yet
    assert layout.block


def test_flow_layout_is_reported():
    layout, items = read_all("[a, b]\n", "q")
    assert not layout.block and [i.value for i in items] == ["a", "b"]
