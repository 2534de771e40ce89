"""Cartesian expansion of hosts and queue entries; canonical form."""

import pytest
import yaml

from pegasus import expand
from pegasus.errors import InputError, TemplateError
from pegasus.model import Job, SubNode
from pegasus.yamltree import read_all


def hosts(text):
    return expand.expand_hosts([i.value for i in read_all(text, "h")[1]])


def jobs(text):
    return [j for i in read_all(text, "q")[1] for j in expand.expand_entry(i.value)]


def test_plain_hosts_and_labels():
    nodes = hosts("- node-1\n- node-2\n")
    assert [n.label for n in nodes] == ["[node-1]", "[node-2]"]
    assert [n.index for n in nodes] == [0, 1]


def test_parametrized_hosts_expand_in_file_order_with_sorted_labels():
    nodes = hosts("- hostname: [node-1, node-2]\n  container: [gpu0, gpu1]\n  a: x\n")
    assert [n.label for n in nodes] == [
        "[node-1 (a=x,container=gpu0)]", "[node-1 (a=x,container=gpu1)]",
        "[node-2 (a=x,container=gpu0)]", "[node-2 (a=x,container=gpu1)]"]


def test_a_host_listed_twice_is_two_sub_nodes_with_numbered_labels():
    """The original ran one session per hosts.yaml line: listing a host twice is
    how a user asks for two jobs at once on it. Labels must tell them apart."""
    nodes = hosts("- node-1\n- node-2\n- node-1\n"
                  "- hostname: [node-3, node-4]\n  gpu: '0'\n- hostname: node-3\n  gpu: '0'\n")
    assert [n.label for n in nodes] == [
        "[node-1#1]", "[node-2]", "[node-1#2]", "[node-3#1 (gpu=0)]", "[node-4 (gpu=0)]",
        "[node-3#2 (gpu=0)]"]
    assert len(set(nodes)) == 6
    assert [n.hostname for n in nodes] == ["node-1", "node-2", "node-1", "node-3", "node-4",
                                           "node-3"]
    assert [n.context()["hostname"] for n in nodes][:3] == ["node-1", "node-2", "node-1"]


def test_hostname_is_rendered_with_the_sub_node_parameters():
    nodes = hosts("- hostname: 'gpu-{{ rack }}'\n  rack: [a, b]\n")
    assert [n.hostname for n in nodes] == ["gpu-a", "gpu-b"]


@pytest.mark.parametrize("text, words", [
    ("- slot: [1]\n", "no 'hostname'"),
    ("- hostname: ''\n", "empty"),
    ("- '-oProxyCommand=x'\n", "starts with '-'"),
    ("- hostname: 'n{{ nope }}'\n", "nope"),
    ("- hostname: n\n  x: []\n", "empty list"),
    ("- [a, b]\n", "hostname"),
])
def test_bad_host_entries(text, words):
    with pytest.raises(InputError, match=None) as err:
        hosts(text)
    assert words in str(err.value) and "entry 1" in str(err.value)


def test_localhost_names_are_local():
    assert [n.is_local for n in hosts("- localhost\n- 127.0.0.1\n- '::1'\n- node\n")] == [
        True, True, True, False]


def test_the_quiz_is_nine_jobs():
    text = """\
- echo hi from {{ hostname }}
- command:
    - for i in $(seq {{ low }} {{ high }}); do echo $i; sleep {{ laziness }}; done
    - echo bye from {{ hostname }}
  low: [1, 2]
  high: [3, 4]
"""
    assert len(jobs(text)) == 1 + 2 * 2 * 2


def test_parametrized_command_equals_the_plain_list():
    nodes = hosts("- hostname: [node-1]\n  container: [gpu0]\n")
    a = jobs("- command:\n    - docker exec {{ container }} python train.py --bs {{ bs }}\n"
             "  bs: [8, 16, 32, 64]\n")
    b = jobs("".join(f"- docker exec {{{{ container }}}} python train.py --bs {bs}\n"
                     for bs in (8, 16, 32, 64)))
    assert [expand.render(j, nodes[0]) for j in a] == [expand.render(j, nodes[0]) for j in b]


def test_sub_node_parameters_win_then_hostname():
    node = SubNode(0, "node-1", (("x", "node"),))
    job = Job("{{x}} {{y}} {{hostname}}", (("x", "job"), ("y", "job"), ("hostname", "job")))
    assert expand.render(job, node) == "node job node-1"


def test_entry_without_command_and_empty_values():
    with pytest.raises(InputError, match="no 'command'"):
        jobs("- cmd: x\n")
    with pytest.raises(InputError, match="empty value"):
        jobs("- command: a{{x}}\n  x: ''\n")
    with pytest.raises(InputError, match="empty"):
        jobs("- '  '\n")


def test_product_beyond_the_limit_is_refused_without_building_it():
    big = "- command: a\n" + "".join(f"  p{i}: [{','.join(str(k) for k in range(10))}]\n"
                                     for i in range(9))
    with pytest.raises(InputError, match="limit"):
        jobs(big)


def test_check_job_against_every_sub_node():
    nodes = hosts("- hostname: a\n  gpu: [0]\n- b\n")
    with pytest.raises(TemplateError, match="gpu"):
        expand.check_job(Job("run {{gpu}}"), nodes)
    expand.check_job(Job("run {{gpu}}", (("gpu", "x"),)), nodes)


def test_canonical_form_round_trips_exactly():
    originals = [Job("echo 'it''s' \"$x\" {{a}}", (("a", "no"), ("b", "0x10"))),
                 Job("line1\nline2 {{ c }}", (("c", "1:30"),)), Job("true", ())]
    text = expand.canonical_yaml(originals)
    back = [j for i in read_all(text, "c")[1] for j in expand.expand_entry(i.value)]
    assert back == originals
    assert all(isinstance(e, dict) and "command" in e for e in yaml.safe_load(text))


# -- whitespace values and NUL (issue 10 §5) --------------------------------------

@pytest.mark.parametrize("value", [" ", "\t", "  \t ", "\n", "' \u3000'"[1:-1]])
def test_a_value_of_only_whitespace_is_refused_like_an_empty_one(value):
    entry = {"command": "rm -rf /data/{{dir}}", "dir": ["a", value]}
    with pytest.raises(InputError) as err:
        expand.expand_entry(entry)
    assert str(err.value) == ("this entry: 'dir' has a value of only whitespace "
                              f"({value!r}); give it a value or remove it")
    with pytest.raises(InputError, match="'rack' has a value of only whitespace"):
        expand.expand_hosts([{"hostname": "n{{rack}}", "rack": value}])


@pytest.mark.parametrize("entry, words", [
    ("touch a\0b", "this entry's command holds a NUL character"),
    ({"command": "touch a\0{{x}}", "x": "1"}, "this entry's command holds a NUL character"),
    ({"command": "touch {{x}}", "x": ["1", "a\0b"]}, "the value 'a\\x00b' of 'x' holds a NUL"),
])
def test_a_nul_character_is_refused(entry, words):
    with pytest.raises(InputError) as err:
        expand.expand_entry(entry)
    assert str(err.value).startswith(words), str(err.value)
    assert "a command cannot carry it" in str(err.value)


def test_a_nul_character_in_a_host_entry_is_refused():
    for entry in ("node\0-1", {"hostname": "node", "x": "a\0"}):
        with pytest.raises(InputError, match="NUL character"):
            expand.expand_hosts([entry])
