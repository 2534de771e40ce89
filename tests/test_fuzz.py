"""Property-based tests: on any input only Pegasus's own errors escape.

Whatever a user puts in queue.yaml or hosts.yaml (random text, random bytes,
YAML-ish token soup, random nested structures, random templates with
``{{``, ``}}``, blocks, helpers, quotes and brackets), the parsers and the
template check either succeed or raise ``pegasus.errors.PegasusError`` with a
non-empty message and no traceback in it. Anything else would reach the user
as a Python traceback.

Also: pybars compiles templates to Python source, pasting ``[...]`` path
segments into it; no template may ever get Python run that way (a marker file
made by the injected code must never appear).

Runs are bounded (250 examples each under CI=true, 50 elsewhere: see
``helpers.examples``; no deadline).
"""

import itertools
import os
import tempfile

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pegasus import expand, hostsfile, template, yamltree
from pegasus.errors import PegasusError
from pegasus.model import SubNode
from pegasus.queuefile import QueueFile
from pegasus.records import Records

from helpers import examples

FUZZ = settings(max_examples=examples(250), deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture,
                                       HealthCheck.filter_too_much])

NODES = [SubNode(0, "localhost"), SubNode(1, "localhost", (("x", "1"),)),
         SubNode(2, "localhost", (("x", "2"), ("y", "b")))]


def only_pegasus_errors(fn, *args, **kwargs):
    """fn(...)'s value, or None if it raised a well-formed PegasusError."""
    try:
        return fn(*args, **kwargs)
    except PegasusError as err:
        message = str(err)
        assert message.strip(), "a PegasusError with an empty message: %r" % (err,)
        assert "Traceback" not in message, message
        return None


# ---------------------------------------------------------------- strategies

YAML_TOKENS = [
    "- ", "-", ": ", ":", "\n", "\n- ", "  ", "    ", "\t", "[", "]", "{", "}", ", ",
    "'", '"', "# ", "&a ", "*a", "*b", "!!python/object/apply:os.system ", "!!str ",
    "!!int ", "!x ", "! ", "---\n", "...\n", "|\n", ">-\n", "? ", "%YAML 1.1\n",
    "command", "hostname", "x", "y", "{{", "}}", "{{x}}", "\\", "~", "null", "no",
    "0x10", "1:30", "\x00", "\ufeff", "\u00e9", "\u2028", "\r\n", "\r", "<<: ",
]
TEMPLATE_TOKENS = [
    "{{", "}}", "{{{", "}}}", "{{~", "~}}", "{{#", "{{/", "{{^", "{{!", "{{!--", "--}}",
    "{{>", "{{&", "#if ", "#unless ", "#with ", "#each ", "/if", "/unless", "/with",
    "/each", "else", "{{else}}", "{{/if}}", "{{#if x}}", "{{#with y}}", "{{/with}}",
    "lower ", "upper ", "shq ", "replace ", "trim ", "camelCase ", "frob ", "lookup ",
    "log ", "helperMissing ", "blockHelperMissing ", "x", "y", "z", "hostname", "this",
    "../", ".", "/", "@index", "@root", "@key", "[", "]", "[x]", "[y z]", "(", ")", "'",
    '"', "\\", " ", "=", "a=", ">", "!", "&", "\n", "\r", "true", "false", "null",
    "undefined", "1", "-1", "{{{{raw}}}}", "{{{{/raw}}}}", "__import__", "%s", "{0}",
]

yamlish = st.lists(st.one_of(st.sampled_from(YAML_TOKENS), st.text(max_size=4)),
                   max_size=40).map("".join)
templates = st.lists(st.one_of(st.sampled_from(TEMPLATE_TOKENS), st.text(max_size=3)),
                     max_size=25).map("".join)
scalars = st.one_of(templates, st.text(max_size=12), st.sampled_from(["", " ", "-x", "~"]))
keys = st.one_of(st.sampled_from(["command", "hostname", "x", "y", "dir", ""]),
                 st.text(max_size=6))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
entries = st.one_of(scalars, st.dictionaries(keys, values, max_size=5), values)
names = st.sets(st.one_of(st.sampled_from(["x", "y", "z", "hostname", "this", "lower"]),
                          st.text(min_size=1, max_size=5)), max_size=4)


def _dump(value):
    return yaml.safe_dump(value, allow_unicode=True, default_flow_style=None)


documents = st.one_of(
    st.text(max_size=200),
    yamlish,
    st.lists(entries, max_size=5).map(_dump),
    st.lists(entries, max_size=5).map(lambda v: _dump(v).replace("'", "")),
)


# ---------------------------------------------------------------- parsers

@FUZZ
@given(documents)
def test_read_all_raises_only_pegasus_errors(text):
    only_pegasus_errors(yamltree.read_all, text, "queue.yaml")


@FUZZ
@given(documents)
def test_read_list_lazily_raises_only_pegasus_errors(text):
    def consume():
        layout, items = yamltree.read_list(text, "queue.yaml")
        return layout, list(items)
    only_pegasus_errors(consume)


def _jobs_of(entry):
    jobs = only_pegasus_errors(expand.expand_entry, entry, 1)
    return jobs or []


@FUZZ
@given(entries)
def test_expand_entry_and_check_raise_only_pegasus_errors(entry):
    for job in _jobs_of(entry)[:20]:
        only_pegasus_errors(expand.check_job, job, NODES, {})
        for node in NODES:
            only_pegasus_errors(expand.render, job, node)


@FUZZ
@given(st.lists(entries, max_size=4))
def test_expand_hosts_raises_only_pegasus_errors(host_entries):
    nodes = only_pegasus_errors(expand.expand_hosts, host_entries,
                                list(range(1, len(host_entries) + 1)))
    for node in nodes or []:
        assert node.hostname and node.hostname == node.hostname.strip()
        assert not node.hostname.startswith("-"), node


@FUZZ
@given(documents)
def test_parsed_documents_expand_raising_only_pegasus_errors(text):
    parsed = only_pegasus_errors(yamltree.read_all, text, "queue.yaml")
    if parsed is None:
        return
    _, items = parsed
    for number, item in enumerate(items[:5], 1):
        for job in _jobs_of(item.value)[:10]:
            only_pegasus_errors(expand.check_job, job, NODES, {})
    only_pegasus_errors(expand.expand_hosts, [item.value for item in items[:5]])


# ---------------------------------------------------------------- templates

@FUZZ
@given(templates, names)
def test_template_check_raises_only_pegasus_errors(tmpl, defined):
    only_pegasus_errors(template.check, tmpl, defined)


@FUZZ
@given(templates, st.dictionaries(st.sampled_from(["x", "y", "z", "hostname"]),
                                  st.text(max_size=8), max_size=4))
def test_template_render_raises_only_pegasus_errors(tmpl, context):
    only_pegasus_errors(template.render, tmpl, context)


@FUZZ
@given(templates, st.dictionaries(st.sampled_from(["x", "y", "z", "hostname"]),
                                  st.text(min_size=1, max_size=8), max_size=4))
def test_what_the_check_accepts_renders(tmpl, context):
    """A job is taken only after the check (given its values): it must then
    render without error."""
    if _check_refuses(tmpl, set(context), context):
        return
    try:
        template.render(tmpl, context)
    except PegasusError as err:
        pytest.fail("check(%r, %r) passed but render failed: %s" % (tmpl, sorted(context), err))


def _check_refuses(tmpl, defined, values={}):
    try:
        template.check(tmpl, defined, values)
    except PegasusError:
        return True
    return False


# ---------------------------------------------------------------- files

@FUZZ
@given(st.one_of(documents.map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.binary(max_size=120)))
def test_queue_and_hosts_files_raise_only_pegasus_errors(data):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "queue.yaml")
        with open(path, "wb") as f:
            f.write(data)
        queue = QueueFile(path)

        def check(job):
            expand.check_job(job, NODES, {})

        only_pegasus_errors(queue.check_all, check)
        only_pegasus_errors(Records(queue).take, ["[localhost]", "[localhost (x=1)]"], check)
        only_pegasus_errors(Records(queue).take, ["[localhost]"], check)
        only_pegasus_errors(hostsfile.load, path)


# ---------------------------------------------------------------- deep nesting, odd digits

@pytest.mark.parametrize("text", [
    "- " + "[" * 600 + "]" * 600 + "\n",
    "- " + "{a: " * 600 + "b" + "}" * 600 + "\n",
    "".join("  " * i + "-\n" for i in range(600)) + "  " * 600 + "- x\n",
    "".join("  " * i + "a:\n" for i in range(600)) + "  " * 600 + "b\n",
], ids=["flow-lists", "flow-mappings", "block-lists", "block-mappings"])
def test_deeply_nested_yaml_is_a_pegasus_error_or_fine(text):
    only_pegasus_errors(yamltree.read_all, text, "queue.yaml")


@pytest.mark.parametrize("tmpl", [
    "{{#if x}}" * 100 + "y" + "{{/if}}" * 100,
    "{{#with x}}" * 100 + "y" + "{{/with}}" * 100,
    "{{lower " + "(lower " * 200 + "x" + ")" * 200 + "}}",
    "{{" * 5000,
    pytest.param("{{x}}" * 5000, marks=pytest.mark.slow),
    "{{x \u00b2}}",
    "{{#if \u00b2}}y{{/if}}",
    "{{lower x k=\u0663}}",
], ids=["nested-if", "nested-with", "nested-subexpressions", "many-opens", "many-names",
        "superscript-digit-argument", "superscript-digit-block", "arabic-digit-kwarg"])
def test_odd_templates_are_a_pegasus_error_or_fine(tmpl):
    # Deep nesting, and digits that str.isdigit() accepts but int() does not.
    only_pegasus_errors(template.check, tmpl, {"x"})
    only_pegasus_errors(template.render, tmpl, {"x": "v"})


# ---------------------------------------------------------------- code injection

# How the generated Python could be broken out of: pybars pastes a [...]
# segment between single quotes (names, helpers) or double quotes
# (subexpression helpers), and literal arguments between either.
BREAKOUTS = [
    "'+str(open(\"{m}\",\"w\"))+'",
    "\"+str(open('{m}','w'))+\"",
    "\"+str(open(\"{m}\",\"w\"))+\"",
    "\"),open(\"{m}\",\"w\"),(\"",
    "\\'+str(open(\"{m}\",\"w\"))+\\'",
    "\\\"+str(open('{m}','w'))+\\\"",
    "');open(\"{m}\",\"w\");('",
    "\");open('{m}','w');(\"",
    "'''+str(open(\"{m}\",\"w\"))+'''",
    "\"\"\"+str(open('{m}','w'))+\"\"\"",
    "'\nopen(\"{m}\",\"w\")\n'",
    "\"\nopen('{m}','w')\n\"",
    "'\ropen(\"{m}\",\"w\")\r'",
    "x'),open(\"{m}\",\"w\"),('",
    "x\"),open('{m}','w'),(\"",
    "'+str(open(chr(47)+\"{m}\"[1:],\"w\"))#",
    "\"+str(open(chr(47)+'{m}'[1:],'w'))#",
]
# Where a [...] segment (P) can sit in a template.
PLACES = [
    "{{[P]}}", "{{{[P]}}}", "{{&[P]}}", "{{x.[P]}}", "{{[P].x}}", "{{../[P]}}",
    "{{this.[P]}}", "{{lower [P]}}", "{{replace [P] x x}}", "{{lower x k=[P]}}",
    "{{lower ([P] x)}}", "{{lower ([P])}}", "{{lower (lower ([P] x))}}",
    "{{lower ([P] k=x)}}", "{{#if [P]}}a{{/if}}", "{{#unless [P]}}a{{/unless}}",
    "{{#with [P]}}a{{/with}}", "{{#if x}}{{[P]}}{{else}}{{[P]}}{{/if}}",
    "{{#each [P]}}a{{/each}}", "{{> [P]}}", "{{> ([P] x)}}", "{{> x [P]}}",
    "{{> x k=[P]}}", "{{#[P]}}a{{/[P]}}", "{{^[P]}}a{{/[P]}}",
    "{{lower \"P\"}}", "{{lower 'P'}}", "{{lower ('P')}}",
]


def _injected(place, breakout, marker):
    return place.replace("P", breakout.replace("{m}", marker))


def _try_everything(tmpl):
    """Every way a template reaches pybars: check, render, jobs and hostnames."""
    outcome = []
    for fn, args in ((template.check, (tmpl, {"x", "hostname"})),
                     (template.render, (tmpl, {"x": "v"})),
                     (expand.expand_hosts, ([{"hostname": tmpl, "x": "v"}],))):
        try:
            fn(*args)
        except PegasusError:
            pass
        except Exception as err:  # noqa: BLE001 - reported by the callers
            outcome.append("%s raised %s: %s" % (fn.__name__, type(err).__name__, err))
    return outcome


@pytest.mark.slow
def test_no_bracket_segment_runs_python(tmp_path):
    marker = str(tmp_path / "injected")
    ran, escaped = [], []
    for place, breakout in itertools.product(PLACES, BREAKOUTS):
        tmpl = _injected(place, breakout, marker)
        escaped += ["%r: %s" % (tmpl, e) for e in _try_everything(tmpl)]
        if os.path.exists(marker):
            ran.append(tmpl)
            os.unlink(marker)
    assert not ran and not escaped, (
        "these templates ran Python:\n" + "\n".join(map(repr, ran))
        + "\nnon-Pegasus errors escaped:\n" + "\n".join(escaped))


@pytest.mark.slow
@FUZZ
@given(place=st.sampled_from(PLACES), breakout=st.sampled_from(BREAKOUTS),
       before=templates, after=templates)
@example(place="{{lower ([P] x)}}", breakout='"+str(open("{m}","w"))+"',
         before="{{x}} ", after=" {{#if x}}y{{/if}}")
def test_fuzzed_bracket_segments_never_run_python(tmp_path, place, breakout, before, after):
    marker = str(tmp_path / "injected-fuzz")  # tmp_path is shared by the examples
    if os.path.exists(marker):
        os.unlink(marker)
    tmpl = before + _injected(place, breakout, marker) + after
    _try_everything(tmpl)
    assert not os.path.exists(marker), "template %r ran Python" % tmpl
