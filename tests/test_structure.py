"""The package's shape: no import cycle, no oversized class (issue 9)."""

import ast
import os

import pegasus

PACKAGE = os.path.dirname(pegasus.__file__)
MAX_CLASS_LINES = 200


def modules():
    for name in sorted(os.listdir(PACKAGE)):
        if name.endswith(".py"):
            with open(os.path.join(PACKAGE, name)) as f:
                yield name[:-3], ast.parse(f.read(), name)


def imports_of(tree):
    """Every pegasus module a module imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "pegasus":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("pegasus."))
    return found


def cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(module, path):
        state[module] = "open"
        for other in sorted(graph.get(module, ())):
            if state.get(other) == "open":
                return path[path.index(other):] + [other]
            if other not in state:
                found = visit(other, path + [other])
                if found:
                    return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


def test_no_import_cycle_in_the_package():
    graph = {name: imports_of(tree) - {name, "__version__"} for name, tree in modules()}
    assert cycle(graph) is None, " -> ".join(cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"cli": {"app"}, "app": {"options", "cli"}, "options": set()}) == [
        "app", "cli", "app"]
    assert cycle({"cli": {"app"}, "app": {"options"}, "options": set()}) is None


def test_no_class_is_over_200_lines():
    big = [f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
           for name, tree in modules() for node in ast.walk(tree)
           if isinstance(node, ast.ClassDef)
           and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES]
    assert big == []


SPAWNERS = {"modes", "running", "connecting", "probing", "controlserver",  # their docstrings
            "outlet"}  # only to end its writer thread in the background when a write is stuck


def test_only_the_loop_modules_spawn_greenlets():
    spawning = {name for name, tree in modules() for node in ast.walk(tree)
                if isinstance(node, ast.Attribute) and node.attr.startswith("spawn")
                and isinstance(node.value, ast.Name) and node.value.id == "gevent"}
    assert spawning <= SPAWNERS, spawning - SPAWNERS
