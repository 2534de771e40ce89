"""Templates render verbatim for the shell; every problem is a TemplateError."""

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pegasus import template
from pegasus.errors import InputError, TemplateError
from pegasus.template import check, render

from helpers import examples

NASTY = ["a&b", "it's", "<x>", "`id`", "a=b", '"q"', "&amp;", "$(id) $HOME", "\\n\\",
         "tab\there", "line\nbreak", "héllo ✓", "*?[a]", "-n", ";rm -rf /;", "%s%%", ""]


def error_of(tmpl, context=None, names=None):
    """The TemplateError message of render (or of check, given names)."""
    with pytest.raises(TemplateError) as err:
        if names is None:
            render(tmpl, context or {})
        else:
            check(tmpl, names)
    return str(err.value)


# -- values arrive verbatim ---------------------------------------------------

@pytest.mark.parametrize("value", NASTY)
@pytest.mark.parametrize("tmpl", ["{{x}}", "{{ x }}", "{{{x}}}", "{{&x}}", "{{lower x}}"])
def test_values_are_inserted_verbatim(tmpl, value):
    if "lower" in tmpl and not value:  # a helper's empty value is refused (below)
        return
    expected = value.lower() if "lower" in tmpl else value
    assert render(f"<{tmpl}>", {"x": value}) == f"<{expected}>"


def test_equals_in_flag_is_not_escaped():
    assert render("--lr={{lr}}", {"lr": "1e-3"}) == "--lr=1e-3"


def test_helper_results_are_verbatim():
    assert render('{{replace x "b" "<&\'`=>"}}', {"x": "abc"}) == "a<&'`=>c"


def test_template_without_braces_skips_pybars(monkeypatch):
    def boom(_template):
        raise AssertionError("compiled a template without '{{'")
    monkeypatch.setattr(template, "_compile", boom)
    tmpl = "echo '{x}' }} & it's"
    assert render(tmpl, {}) is tmpl
    check(tmpl, [])


def test_text_around_tags_is_kept():
    tmpl = "a {x} }} {{x}}\n\tb 'c' \"d\" & <e>\n"
    assert render(tmpl, {"x": "1"}) == "a {x} }} 1\n\tb 'c' \"d\" & <e>\n"


# -- unknown names ------------------------------------------------------------

def test_unknown_name_is_named_with_the_defined_names():
    message = error_of("rm -rf /data/{{dir}}", {"hostname": "h", "bs": "8"})
    assert message == ("unknown name 'dir' in template 'rm -rf /data/{{dir}}' "
                       "(defined here: bs, hostname)")
    assert isinstance(TemplateError("x"), InputError)


@pytest.mark.parametrize("tmpl", [
    "{{lower dir}}", "{{replace x dir \"b\"}}", "{{lower (upper dir)}}", "{{dir.sub}}",
    "{{{dir}}}", "{{&dir}}", "{{x}}{{dir}}",
])
def test_unknown_name_anywhere_is_an_error(tmpl):
    assert "unknown name 'dir'" in error_of(tmpl, {"x": "1"})


@pytest.mark.parametrize("tmpl, name", [("{{x.y}}", "x.y"), ("{{x.[0]}}", "x.0"),
                                        ("{{this}}", "this"), ("{{@index}}", "@index")])
def test_values_have_no_fields(tmpl, name):
    assert f"unknown name {name!r}" in error_of(tmpl, {"x": "1", "y": "2"})


def test_no_names_defined_says_so():
    assert error_of("{{x}}").endswith("(defined here: none)")


# -- syntax -------------------------------------------------------------------

@pytest.mark.parametrize("tmpl", ["a {{x", "{{x}} {{", "{{x}", "echo {{x}} {{y"])
def test_unclosed_braces(tmpl):
    message = error_of(tmpl, {"x": "1", "y": "2"})
    assert message.startswith("unclosed '{{'") and repr(tmpl) in message


def test_unclosed_block():
    message = error_of("{{#if x}}rm -rf /", {"x": "1"})
    assert message.startswith("'{{#if}}' is never closed by '{{/if}}'")


@pytest.mark.parametrize("tmpl, tag", [
    ("{{#if x}}a{{/unless}}", "{{/unless}}"), ("{{a'b}} c", "{{a'b}}"), ("{{}}", "{{}}"),
    ("{{x {{y}}", "{{x {{y}}"), ("{{#if x}}{{a'b}}{{/if}}", "{{a'b}}"),
])
def test_invalid_tags(tmpl, tag):
    assert error_of(tmpl, {"x": "1", "y": "2"}).startswith(f"syntax error at {tag!r} in template")


def test_bracket_segment_cannot_run_python(tmp_path):
    marker = tmp_path / "ran"
    tmpl = "{{[a' + str(open(r'%s', 'w')) + 'b]}}" % marker
    assert "quotes and backslashes are not allowed" in error_of(tmpl, {"a": "1"})
    assert "quotes and backslashes are not allowed" in error_of(tmpl, names=["a"])
    assert not marker.exists()


def test_plain_bracket_segment_still_works():
    assert render("{{[a-b]}}", {"a-b": "v"}) == "v"


def test_partials_are_not_supported():
    assert error_of("{{> other}}").startswith("partials ('{{> name}}') are not supported")


# -- helpers ------------------------------------------------------------------

HELPER_CASES = [
    ('{{ replace model "/" "--" }}', "facebook--opt-1.3b"),
    ('{{replace "a.b.c" "." ""}}', "abc"),
    ('{{lowerCase "Hello Foo-Bars"}}', "hello foo-bars"),
    ('{{lower "Hello Foo-Bars"}}', "hello foo-bars"),
    ('{{upperCase "Hello foo-bars"}}', "HELLO FOO-BARS"),
    ('{{upper "Hello foo-bars"}}', "HELLO FOO-BARS"),
    ('{{capitalizeFirst "hello foo-bars"}}', "Hello foo-bars"),
    ('{{capitalizeWords "hello  foo-bars x"}}', "Hello  Foo-bars X"),
    ('{{camelCase "Hello foo-bars"}}', "helloFooBars"),
    ('{{camelCase "HTTPServer_name"}}', "httpServerName"),
    ('{{pascalCase "Hello foo-bars"}}', "HelloFooBars"),
    ('{{snakeCase "Hello foo-bars"}}', "hello_foo_bars"),
    ('{{snakeCase model}}', "facebook_opt_1_3b"),
    ('{{kebabCase "helloFooBars"}}', "hello-foo-bars"),
    ('{{shoutySnakeCase "Hello foo-bars"}}', "HELLO_FOO_BARS"),
    ('{{trim "  a b \t"}}', "a b"),
    ('{{trimStart "  a b  "}}', "a b  "),
    ('{{trimEnd "  a b  "}}', "  a b"),
    ("{{shq q}}", "'it'\"'\"'s a b'"),
    ("{{shq model}}", "facebook/opt-1.3b"),
    ('{{upper (replace model "/" "--")}}', "FACEBOOK--OPT-1.3B"),
]


@pytest.mark.parametrize("tmpl, expected", HELPER_CASES)
def test_helpers(tmpl, expected):
    context = {"model": "facebook/opt-1.3b", "q": "it's a b"}
    assert render(tmpl, context) == expected
    check(tmpl, context)


def test_every_helper_is_tested():
    used = {word.strip("{(") for tmpl, _ in HELPER_CASES for word in tmpl.split()}
    assert set(template._HELPERS) - used == set()


@pytest.mark.parametrize("tmpl, words", [
    ("{{replace x}}", "helper 'replace' takes 3 arguments (got 1)"),
    ("{{lower x x}}", "helper 'lower' takes 1 argument (got 2)"),
    ("{{shq}}", "helper 'shq' takes 1 argument (got 0)"),
    ("{{replace x ab=1}}", "helper 'replace' takes no key=value arguments"),
    ("{{lower 12}}", "helper 'lower' takes names or quoted text"),
])
def test_helper_misuse(tmpl, words):
    assert error_of(tmpl, {"x": "1"}) == f"{words} in template {tmpl!r}"
    assert error_of(tmpl, names=["x"]) == f"{words} in template {tmpl!r}"


@pytest.mark.parametrize("tmpl, name", [("{{foo x}}", "foo"), ("{{lower (foo x)}}", "foo"),
                                        ("{{log x}}", "log"), ("{{shq (foo x)}}", "foo")])
def test_unknown_helper(tmpl, name):
    assert error_of(tmpl, {"x": "1"}).startswith(f"unknown helper {name!r} in template")


def test_unknown_helper_message_lists_helpers():
    message = error_of("{{foo x}}", {"x": "1"})
    assert message.startswith("unknown helper 'foo' in template '{{foo x}}' (helpers: ")
    assert "shq" in message and "replace" in message


@given(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))))
@settings(max_examples=examples(60), deadline=None)
def test_shq_round_trips_through_sh(value):
    if not value.strip():  # refused (below)
        return
    assert run_sh(render("printf %s {{shq v}}", {"v": value})) == value


@pytest.mark.parametrize("value", [v for v in NASTY if v] +
                         ["'", "''", "a'b\"c", "!", "~", "#", "{{x}}"])
def test_shq_round_trips_nasty_strings(value):
    assert run_sh(render("printf %s {{shq v}}", {"v": value})) == value


def run_sh(command):
    done = subprocess.run(["sh", "-c", command], stdout=subprocess.PIPE, check=True)
    return done.stdout.decode("utf-8", "surrogateescape")


# -- check --------------------------------------------------------------------

ACCEPTED = ["plain", '{{ replace model "/" "--" }}', "{{model}}{{hostname}}",
            "{{shq model}} {{{model}}}", "{{lower (upper model)}} \\{{x}}"]
REJECTED = ["{{dir}}", "{{#if dir}}{{/if}}", "{{foo model}}", "a {{model", "{{#if model}}",
            "{{replace model}}", "{{model.x}}"]


@pytest.mark.parametrize("tmpl", ACCEPTED)
def test_check_accepts_what_renders(tmpl):
    check(tmpl, ["model", "hostname"])
    render(tmpl, {"model": "m", "hostname": "h"})


@pytest.mark.parametrize("tmpl", REJECTED)
def test_check_rejects_what_render_rejects(tmpl):
    assert error_of(tmpl, names=["model", "hostname"]) == \
        error_of(tmpl, {"model": "m", "hostname": "h"})


def test_check_accepts_any_iterable_of_names():
    check("{{a}}{{b}}", iter(["a", "b"]))
    check("{{a}}{{b}}", {"a": "1", "b": "2"}.keys())


# -- compile cache and messages -----------------------------------------------

def test_compile_cache_compiles_each_template_once(monkeypatch):
    calls = []
    original = template._code
    monkeypatch.setattr(template, "_code", lambda tree: calls.append(tmpl) or original(tree))
    tmpl = "echo {{replace x 'q' 'q'}} # test_compile_cache_compiles_each_template_once"
    before = template._compile.cache_info()
    assert render(tmpl, {"x": "1"}) == "echo 1 # test_compile_cache_compiles_each_template_once"
    assert render(tmpl, {"x": "2"}) == "echo 2 # test_compile_cache_compiles_each_template_once"
    check(tmpl, ["x"])
    assert calls == [tmpl]
    after = template._compile.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 2)


@pytest.mark.parametrize("tmpl", REJECTED + ["{{lower (foo x)}}", "{{> p}}", "{{a'b}}"])
def test_messages_have_no_internals(tmpl):
    message = error_of(tmpl, {"model": "m"})
    for word in ("Traceback", "pybars", "Pybars", "property", "_Missing", "_Value", "Scope"):
        assert word not in message


def test_long_templates_are_shortened_in_messages():
    tmpl = "echo " + "a" * 500 + " {{dir}}"
    message = error_of(tmpl, {"x": "1"})
    assert "..." in message and len(message) < 200


def test_pybars_itself_is_not_patched():
    import pybars
    render("{{x}}", {"x": "a&b"})
    assert pybars.Compiler().compile("{{x}}")({"x": "a&b"}) == "a&amp;b"


# -- only the documented helpers (issue 10 §5) ----------------------------------

# pybars' own helpers, as blocks and inline, and sections on a name: each of
# them rendered an unknown or plain name to nothing ('rm -rf /data/{{...}}'
# ran as 'rm -rf /data/').
BUILT_INS = [
    ("{{#each dir}}{{this}}{{/each}}", "each"), ("{{each dir}}", "each"),
    ("{{helperMissing dir}}", "helperMissing"),
    ("{{#helperMissing dir}}x{{/helperMissing}}", "helperMissing"),
    ('{{lookup dir "a"}}', "lookup"), ("{{lookup dir dir}}", "lookup"),
    ("{{#with dir}}{{this}}{{/with}}", "with"), ("{{with dir}}", "with"),
    ("{{#if dir}}{{dir}}{{/if}}", "if"), ("{{#if dir}}a{{else}}b{{/if}}", "if"),
    ("{{if dir}}", "if"), ("{{#unless dir}}a{{/unless}}", "unless"),
    ("{{unless dir}}", "unless"), ("{{blockHelperMissing dir}}", "blockHelperMissing"),
    ("{{#blockHelperMissing dir}}x{{/blockHelperMissing}}", "blockHelperMissing"),
    ("{{log dir}}", "log"), ("{{#log dir}}x{{/log}}", "log"),
    ('{{lower (lookup dir "a")}}', "lookup"), ("{{shq (each dir)}}", "each"),
    ("{{#dir}}[{{this}}]{{/dir}}", "dir"), ("{{^dir}}x{{/dir}}", "dir"),
    ("{{{{raw}}}}{{dir}}{{{{/raw}}}}", "raw"),
]


@pytest.mark.parametrize("tmpl, name", BUILT_INS)
def test_only_the_documented_helpers_exist(tmpl, name):
    for message in (error_of("rm -rf /data/" + tmpl, {"dir": "x"}),
                    error_of("rm -rf /data/" + tmpl, names=["dir"])):
        assert message.startswith(f"unknown helper {name!r}"), message
        assert "(helpers: replace, " in message and "shq" in message


def test_every_pybars_helper_is_refused():
    from pybars._compiler import _pybars_

    assert set(_pybars_["helpers"]) <= {name for _, name in BUILT_INS}


@pytest.mark.parametrize("tmpl", ["{{#lower dir}}x{{/lower}}", "{{^shq dir}}x{{/shq}}"])
def test_a_helper_cannot_open_a_block(tmpl):
    for message in (error_of(tmpl, {"dir": "x"}), error_of(tmpl, names=["dir"])):
        assert message.startswith("blocks ('{{#...}}', '{{^...}}') are not supported"), message


def test_the_names_of_pybars_helpers_are_plain_names():
    names = ["each", "if", "with", "unless", "lookup", "log", "helperMissing",
             "blockHelperMissing"]
    tmpl = " ".join("{{%s}}" % name for name in names)
    assert render(tmpl, {name: name.upper() for name in names}) == \
        " ".join(name.upper() for name in names)
    check(tmpl, names)
    assert error_of("{{each}}", {"x": "1"}).startswith("unknown name 'each'")


# -- a literal '{{': Handlebars' escape '\{{' (issue 10 §7) ----------------------

@pytest.mark.parametrize("tmpl, expected", [
    ("docker ps --format '\\{{.Names}}'", "docker ps --format '{{.Names}}'"),
    ("docker inspect -f '\\{{.State.Pid}}' {{x}}", "docker inspect -f '{{.State.Pid}}' v"),
    ("\\{{x}} {{x}}", "{{x}} v"),
    ("a \\{{ b", "a {{ b"),
    ("\\{{dir}} \\{{#each dir}}\\{{/each}}", "{{dir}} {{#each dir}}{{/each}}"),
    ("\\{{{x}}}", "{{{x}}}"),
    ("\\\\{{x}}", "\\v"),  # an escaped backslash, then a real '{{'
    ("a\\b {{x}} \\n", "a\\b v \\n"),  # other backslashes stay
    ("{{shq x}} '\\{{json .}}'", "v '{{json .}}'"),
])
def test_an_escaped_mustache_is_a_literal(tmpl, expected):
    assert render(tmpl, {"x": "v"}) == expected
    check(tmpl, ["x"])


def test_the_check_does_not_look_inside_escaped_mustaches():
    check("docker ps --format '\\{{.Names}}' \\{{dir}} \\{{#each x}}", [])
    assert "unknown name 'dir'" in error_of("\\{{x}} {{dir}}", names=["x"])
    message = error_of("echo '\\{{.Names}}' {{dir}}", {"x": "1"})
    assert message.startswith("unknown name 'dir' in template \"echo '\\\\{{.Names}}' {{dir}}\"")


def test_an_escaped_mustache_through_the_cli(tmp_path, run_pegasus):
    # Plain YAML keeps the backslash; in a double-quoted YAML string it is
    # written twice (YAML's own escape).
    out = tmp_path / "out.txt"
    (tmp_path / "hosts.yaml").write_text("- localhost\n")
    (tmp_path / "queue.yaml").write_text(
        "- printf '%s\\n' '\\{{.Names}}' > OUT\n"
        "- \"printf '%s\\\\n' '\\\\{{json .}}' >> OUT\"\n".replace("OUT", str(out)))
    res = run_pegasus(["q"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert out.read_text() == "{{.Names}}\n{{json .}}\n"


# -- a helper never gives an empty value -----------------------------------------

# Every documented helper that can give nothing, and how (issue 10's review:
# `rm -rf /data/{{replace dir dir ""}}` ran `rm -rf /data/`).
EMPTY_HELPERS = [
    ('{{replace dir dir ""}}', {}), ('{{replace dir "a" ""}}', {"dir": "a"}),
    ('{{replace dir "a" " "}}', {"dir": "aa"}),
    ("{{lower x}}", {"x": ""}), ("{{lowerCase x}}", {"x": " "}),
    ("{{upper x}}", {"x": ""}), ("{{upperCase x}}", {"x": "\t"}),
    ("{{capitalizeFirst x}}", {"x": " "}), ("{{capitalizeWords x}}", {"x": ""}),
    ("{{camelCase x}}", {"x": "--"}), ("{{pascalCase x}}", {"x": "__"}),
    ("{{snakeCase x}}", {"x": "%%"}), ("{{kebabCase x}}", {"x": "..."}),
    ("{{shoutySnakeCase x}}", {"x": "!?"}),
    ("{{trim x}}", {"x": " "}), ("{{trimStart x}}", {"x": "\n"}), ("{{trimEnd x}}", {"x": " "}),
    ('{{trim " "}}', {}), ("{{shq x}}", {"x": " "}), ('{{shq ""}}', {}),
    ('{{shq (replace dir dir "")}}', {}), ('{{upper (snakeCase x)}}', {"x": "--"}),
]


@pytest.mark.parametrize("tmpl,context", EMPTY_HELPERS, ids=[t for t, _ in EMPTY_HELPERS])
def test_a_helper_that_gives_an_empty_value_is_refused(tmpl, context):
    context = dict({"dir": "models", "x": "x"}, **context)
    message = error_of(f"rm -rf /data/{tmpl}", context)
    assert "gives an empty value" in message and "rm -rf /data/" in message


@pytest.mark.parametrize("tmpl,context", EMPTY_HELPERS, ids=[t for t, _ in EMPTY_HELPERS])
def test_the_check_refuses_it_with_the_values_it_knows(tmpl, context):
    context = dict({"dir": "models", "x": "x"}, **context)
    with pytest.raises(TemplateError, match="gives an empty value"):
        check(f"rm -rf /data/{tmpl}", set(context), context)


def test_the_check_with_placeholders_refuses_what_is_empty_whatever_the_values():
    with pytest.raises(TemplateError, match="gives an empty value"):
        check('rm -rf /data/{{replace dir dir ""}}', {"dir"})
    check('rm -rf /data/{{replace dir "x" ""}}', {"dir"})  # depends on the value


def test_helpers_with_a_value_left_are_fine():
    assert render('{{replace dir "a" ""}} {{shq x}} {{snakeCase y}}',
                  {"dir": "abc", "x": "a b", "y": "-a-"}) == "bc 'a b' a"


# -- compiling ------------------------------------------------------------------

def test_code_is_generated_from_the_tree_the_check_parsed(monkeypatch):
    """One parse a template (pybars' precompile would parse it again)."""
    compiler = template._compiler()
    parses = []
    real = type(compiler)._handlebars
    monkeypatch.setattr(type(compiler), "_handlebars",
                        staticmethod(lambda text: parses.append(text) or real(text)))
    template._compile.cache_clear()
    assert render('a {{x}} {{shq (lower y)}}', {"x": "1", "y": "B c"}) == "a 1 'b c'"
    assert len(parses) == 1



def test_a_template_that_does_not_parse_is_parsed_once_and_refused_alike(monkeypatch):
    """A bad entry is checked, then rendered (and a daemon checks its head again):
    one parse of pybars' grammar, some 10 ms each, and the same message every time."""
    compiler = template._compiler()
    parses = []
    real = type(compiler)._handlebars
    monkeypatch.setattr(type(compiler), "_handlebars",
                        staticmethod(lambda text: parses.append(text) or real(text)))
    template._compile.cache_clear()
    tmpl = "echo {{lower (x}} # test_a_template_that_does_not_parse_is_parsed_once"
    said = {error_of(tmpl, {"x": "1"}) for _ in range(3)}
    with pytest.raises(TemplateError) as err:
        check(tmpl, ["x"])
    assert said == {str(err.value)} and str(err.value).startswith("syntax error at '{{lower (x}}'")
    assert len(parses) == 1


# -- names alone need no parse of pybars' grammar --------------------------------

def test_ten_thousand_commands_of_names_alone_are_checked_without_pybars(monkeypatch):
    """The start-up check of 10,000 distinct commands (some 10 ms each through
    pybars' grammar): text, ``{{ name }}`` and ``{{ helper name }}`` never reach it."""
    compiler = template._compiler()
    parses = []
    real = type(compiler)._handlebars
    monkeypatch.setattr(type(compiler), "_handlebars",
                        staticmethod(lambda text: parses.append(text) or real(text)))
    names = ["lr", "hostname", "a_b", "c-d", "each"]
    for i in range(10000):
        check("python t.py --lr={{lr}} --seed %d {{ hostname }}/{{a_b}}{{c-d}} {{each}}"
              " ${HOME} } }} {x} ~/%d {{shq a_b}}" % (i, i), names)
    assert render("{{upper a_b}} {{ shq\nc-d }}", {"a_b": "x", "c-d": "a b"}) == "X 'a b'"
    assert render("x{{\tlr\n}}{{each}}}", {"lr": "1e-3", "each": "&"}) == "x1e-3&}"
    assert error_of("{{lr}} {{nope}}", {"lr": "1"}).startswith(
        "unknown name 'nope' in template '{{lr}} {{nope}}' (defined here: lr)")
    assert error_of("{{shq lr}}", {"lr": " "}).startswith("helper 'shq' gives an empty value")
    assert parses == []
    assert render("{{replace lr 'a' 'b'}}", {"lr": "a"}) == "b" and len(parses) == 1


# Pieces of templates: every kind of pybars token, names of every kind, text.
_PIECES = ["{{", "}}", "{", "}", " ", "\t", "\n", "\r", "~", "\\", "x", "y", "a_b", "c-d",
           "1", "9a", "else", "this", "true", "null", "each", "lookup", "upper", "shq",
           "@index", ".", "/", "../", "[x]", "#", "!", "&", ">", "^", "(", ")", "=", "'", "²",
           "é", "text", "{{x}}", "{{ a_b }}", "{{shq x}}", "{{ upper\tc-d }}", "trueish", "nullx",
           "{{shq 9a}}", "{{lower true}}", "{{replace x}}", "{{shq else}}", "{{shq each}}"]


@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join),
       st.dictionaries(st.sampled_from(["x", "y", "a_b", "c-d", "1", "9a", "true", "each",
                                        "trueish", "nullx"]),
                       st.sampled_from(["v", "", " ", "&<>'\"", "{{x}}", "é"])))
@settings(max_examples=examples(400), deadline=None)
def test_names_alone_render_as_pybars_renders_them(tmpl, context):
    """The shortcut for text and ``{{ [helper] name }}`` gives what pybars gives: the same
    text or the same error, for templates made of every kind of piece."""
    def outcome():
        template._compile.cache_clear()
        try:
            return render(tmpl, context)
        except TemplateError as err:
            return "error: %s" % err
    fast = outcome()
    real = template._simple
    try:
        template._simple = lambda chunk: None
        slow = outcome()
    finally:
        template._simple = real
        template._compile.cache_clear()
    assert fast == slow
