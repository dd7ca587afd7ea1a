"""The layout rules of docs/architecture.md, read from the source with ast (nothing is imported):
no import cycle between refrain's packages, no module over 400 lines, no constructor wider than 12
arguments."""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "refrain"
MAX_LINES = 400
MAX_ARGUMENTS = 12


def modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def package_of(path: Path) -> str:
    """``refrain.<package>`` a file belongs to (a top-level module such as errors.py is its own node)."""
    parts = path.relative_to(SRC).parts
    return parts[0] if len(parts) > 1 else Path(parts[0]).stem


def imported_packages(path: Path, tree: ast.Module) -> Iterator[tuple[str, int]]:
    """(refrain package, line) of every import in the file, also those inside functions (a lazy import
    is still a dependency) and relative ones."""
    here = path.relative_to(SRC).with_suffix("").parts
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom):  # relative: resolve against the file's own package
            base = here[: len(here) - node.level]
            names = [".".join(("refrain", *base, *([node.module] if node.module else [])))]
        for name in names:
            parts = name.split(".")
            if parts[0] == "refrain" and len(parts) > 1:
                yield parts[1], node.lineno


def import_graph() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> the 'file:line' places that import it."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path, tree in modules():
        source = package_of(path)
        for target, line in imported_packages(path, tree):
            if target != source:
                graph[source][target].append(f"{path.relative_to(SRC)}:{line}")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b": ["x"]}, "b": {"c": ["y"]}, "c": {"a": ["z"]}, "d": {"a": ["w"]}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b": ["x"]}, "b": {}}) == []


def test_no_import_cycle_between_packages() -> None:
    graph = import_graph()
    assert {"sampling", "lora", "bundles", "data", "training"} <= set(graph)  # the graph is really read
    problems = []
    for component in cycles(graph):
        edges = [
            f"{a} -> {b} ({', '.join(graph[a][b][:3])})"
            for a in component
            for b in component
            if b in graph.get(a, {})
        ]
        problems.append(f"cycle {' / '.join(component)}: " + "; ".join(edges))
    assert not problems, "\n".join(problems)


def test_no_module_over_400_lines() -> None:
    long = {
        str(path.relative_to(SRC)): n
        for path, _ in modules()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"


def constructor_widths() -> dict[str, int]:
    """'file:Class' -> arguments of its explicit __init__ (self, *args and **kwargs not counted)."""
    widths = {}
    for path, tree in modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    args = item.args
                    count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs) - 1
                    widths[f"{path.relative_to(SRC)}:{node.name}"] = count
    return widths


def test_constructor_widths_are_read() -> None:
    widths = constructor_widths()
    assert (
        widths["sampling/engine.py:SamplingEngine"] == 7
    )  # model, vae, vocab, text_encoder, hash, path, device


def test_widest_constructor_takes_at_most_12_arguments() -> None:
    wide = {name: n for name, n in constructor_widths().items() if n > MAX_ARGUMENTS}
    assert not wide, f"take collaborators as configured objects (at most {MAX_ARGUMENTS} arguments): {wide}"


# cli modules run as ``python -m refrain.cli.X`` on purpose, not console scripts (docs/architecture.md says why)
MODULE_ONLY_COMMANDS = {"diffrhythm"}


def console_scripts() -> dict[str, str]:
    """pyproject's [project.scripts]: name -> 'module:function'."""
    import tomllib

    pyproject = SRC.parents[1] / "pyproject.toml"
    return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["scripts"]


def test_every_console_script_is_a_main_in_cli() -> None:
    wrong = {}
    for name, target in console_scripts().items():
        module, _, function = target.partition(":")
        path = SRC / "cli" / f"{module.rpartition('.')[2]}.py"
        tree = ast.parse(path.read_text(encoding="utf-8")) if path.is_file() else ast.Module(body=[])
        defines = any(isinstance(node, ast.FunctionDef) and node.name == function for node in tree.body)
        if not module.startswith("refrain.cli.") or not defines:
            wrong[name] = target
    assert not wrong, f"console scripts must be refrain.cli.<module>:main: {wrong}"


def test_every_cli_command_is_a_console_script_or_named_module_only() -> None:
    scripted = {target.partition(":")[0].rpartition(".")[2] for target in console_scripts().values()}
    commands = {
        path.stem
        for path in (SRC / "cli").glob("*.py")
        if any(
            isinstance(node, ast.FunctionDef) and node.name == "main"
            for node in ast.parse(path.read_text()).body
        )
    }
    unlisted = commands - scripted - MODULE_ONLY_COMMANDS
    assert not unlisted, (
        f"add to [project.scripts] or MODULE_ONLY_COMMANDS (with the reason in docs): {unlisted}"
    )
