"""kdsl's layer order (DESIGN.md, "Dependencies point one way, lazy imports included"), enforced on the source.

Every `.py` file under `kdsl/` is parsed with `ast` (nothing is imported, so this runs in a fraction of a second).
Each import of `kdsl.<pkg>` is mapped to the layer of `<pkg>`; an import must point to a lower layer, or stay inside
its own package. What counts as an import:
- `import kdsl.x`, `from kdsl.x import y`, `from kdsl import x` (x a subpackage or module), at module level AND
  inside functions, methods and classes (lazy imports);
- relative imports (`from . import x`, `from ..x import y`), resolved against the file's package;
- imports under `if TYPE_CHECKING:` are checked like any other (they are not exempt: a typing-only upward import is
  still a dependency in the wrong direction, and none is needed today);
- backends registered by name, as `"kdsl.<pkg>.<module>:<Class>"` strings or `importlib.import_module("kdsl...")`.
Two packages in one layer are siblings and do not import each other (above layer 0; layer 0 is the foundation and
the package-level cycle check below guards it). The package-level import graph, lazy imports included, has no cycle.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "kdsl"

# The layer table: (layer, packages, why). "kdsl" is the top-level package (`kdsl/__init__.py`); `config` and `errors`
# are the modules `kdsl/config.py` and `kdsl/errors.py`. Lower layers never import higher ones.
LAYER_TABLE: tuple[tuple[int, tuple[str, ...], str], ...] = (
    (0, ("kdsl", "_internal", "config", "errors"),
     "foundation: the version, settings, error types, atomic writes, progress bars; nothing above (config uses errors)"),
    (1, ("data",), "samples, datasets, loaders and splits: the input that every other layer reads"),
    (2, ("tools",), "what can be seen of a sample (features, OCR, visual labels, embeddings, cache): built on data"),
    (3, ("rules",), "the rule language, engine and statistics: rules are evaluated over tools' feature tables"),
    (4, ("search", "memory", "models", "traces"),
     "independent services on rules and tools (MCTS and the proposer protocol, the Chroma memory, model backends, "
     "trace events); siblings, none imports another"),
    (5, ("agents",), "authors (agents/authors: mined, contrast, ngram, LLM; registered by name), verifier, deciders, "
     "arbiter, evaluation: they combine models, rules, search and traces"),
    (6, ("training",), "post-training and seesaw diagnostics of the deciders that agents defines"),
    (7, ("graph",), "the LangGraph session: orchestrates agents, search and memory; owns the session folder layout"),
    (8, ("report", "serve"),
     "readers of a finished session: the HTML report (reads graph's layout, moved out of traces) and the FastAPI app"),
    (9, ("cli",), "the typer app `kdsl`: wires every layer, imported by nothing in kdsl"),
)
LAYER: dict[str, int] = {pkg: layer for layer, pkgs, _ in LAYER_TABLE for pkg in pkgs}

# Upward imports that exist today in files this change could not touch, as "<file> -> kdsl.<pkg>" (no line numbers,
# so an edit above the import does not break the list). Each entry carries "known violation, see issue 16".
# Empty: the code had no upward, sideways or circular import when this test was written.
KNOWN_VIOLATIONS: frozenset[str] = frozenset()

_REGISTERED = re.compile(r"kdsl(?:\.[A-Za-z_]\w*)+:[A-Za-z_][\w.]*")  # "kdsl.models.hf:HFBackend"
_REGISTERED_TEXT = re.compile(r"""["']kdsl(?:\.[A-Za-z_]\w*)+:""")


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository, e.g. "kdsl/graph/nodes.py"
    line: int
    target: str  # the imported module, e.g. "kdsl.graph.session"
    where: str  # "module level", "in a function", "under TYPE_CHECKING", "by name"


def package_of_file(rel: str) -> str:
    """`kdsl/graph/nodes.py` -> "graph"; `kdsl/config.py` -> "config"; `kdsl/__init__.py` -> "kdsl"."""
    parts = Path(rel).with_suffix("").parts
    if len(parts) == 2:
        return "kdsl" if parts[1] == "__init__" else parts[1]
    return parts[1]


def package_of_module(module: str) -> str:
    """`kdsl.graph.nodes` -> "graph"; `kdsl` -> "kdsl"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "kdsl"


def _module_exists(module: str, root: Path) -> bool:
    path = root.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(body: list[ast.stmt], where: str):
    """Every statement, nested ones included, with where it sits. Imports are statements, so walking statements
    (not every expression node) finds them all, several times faster than a full `ast` visit."""
    for stmt in body:
        yield stmt, where
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _statements(stmt.body, where if where == "under TYPE_CHECKING" else "in a function")
        elif isinstance(stmt, ast.If) and _is_type_checking(stmt.test):
            yield from _statements(stmt.body, "under TYPE_CHECKING")
            yield from _statements(stmt.orelse, where)
        else:  # class, if, for, while, with, try (and its handlers), match (and its cases)
            for field in ("body", "orelse", "finalbody"):
                yield from _statements(getattr(stmt, field, []), where)
            for inner in getattr(stmt, "handlers", []) + getattr(stmt, "cases", []):
                yield from _statements(inner.body, where)


def _is_kdsl(module: str) -> bool:
    return module == "kdsl" or module.startswith("kdsl.")


def imports_of(rel: str, source: str, root: Path = ROOT) -> list[Import]:
    """The `kdsl` imports in one file's source, in source order; `rel` is its path relative to the repository."""
    parts = Path(rel).with_suffix("").parts
    package = list(parts[:-1])  # `from . import x` in kdsl/a/b.py and in kdsl/a/__init__.py both mean kdsl.a.x
    tree = ast.parse(source, filename=rel)
    found = []
    for stmt, where in _statements(tree.body, "module level"):
        if isinstance(stmt, ast.Import):
            found += [Import(rel, stmt.lineno, a.name, where) for a in stmt.names if _is_kdsl(a.name)]
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level:
                keep = len(package) - (stmt.level - 1)
                assert keep >= 1, f"{rel}:{stmt.lineno}: relative import goes above the kdsl package"
                base = ".".join(package[:keep] + ([stmt.module] if stmt.module else []))
            else:
                base = stmt.module or ""
            if not _is_kdsl(base):
                continue
            for alias in stmt.names:
                candidate = f"{base}.{alias.name}"  # `from kdsl import graph` imports the package kdsl.graph
                found.append(Import(rel, stmt.lineno, candidate if _module_exists(candidate, root) else base, where))
    if "import_module" in source or _REGISTERED_TEXT.search(source):  # by name: only where the text may hold one
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                value = node.args[0].value
                if name == "import_module" and isinstance(value, str) and _is_kdsl(value):
                    found.append(Import(rel, node.lineno, value, "by name"))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _REGISTERED.fullmatch(node.value):
                found.append(Import(rel, node.lineno, node.value.partition(":")[0], "by name"))
    return sorted(found, key=lambda imp: imp.line)


@cache
def all_imports() -> tuple[tuple[str, ...], tuple[Import, ...]]:
    """(every file under kdsl/, every kdsl import in them), parsed once per test run."""
    files, found = [], []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        files.append(rel)
        found.extend(imports_of(rel, path.read_text(encoding="utf-8")))
    return tuple(files), tuple(found)


def layer_problems(imports: list[Import] | tuple[Import, ...]) -> list[tuple[str, str]]:
    """(allow-list key "<file> -> kdsl.<pkg>", readable line) for each import against the layer order."""
    problems = []
    for imp in imports:
        src, dst = package_of_file(imp.file), package_of_module(imp.target)
        if src == dst or src not in LAYER:  # a file without a layer is reported by its own test
            continue
        if dst not in LAYER:
            line = f"{imp.file}:{imp.line} imports {imp.target}, whose package has no layer ({imp.where})"
        elif LAYER[dst] > LAYER[src]:
            line = f"{imp.file}:{imp.line} imports kdsl.{dst} (layer {LAYER[dst]}) from layer {LAYER[src]} ({imp.where})"
        elif LAYER[dst] == LAYER[src] > 0:
            line = (f"{imp.file}:{imp.line} imports kdsl.{dst} (layer {LAYER[dst]}) from its sibling kdsl.{src} "
                    f"in the same layer ({imp.where})")
        else:
            continue
        problems.append((f"{imp.file} -> kdsl.{dst}", line))
    return problems


def package_cycles(imports: list[Import] | tuple[Import, ...]) -> list[str]:
    """Every cycle in the package-level import graph, each as "a -> b -> a (first import of each edge)"."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        src, dst = package_of_file(imp.file), package_of_module(imp.target)
        if src != dst:
            edges.setdefault(src, {}).setdefault(dst, imp)

    def path(start: str, goal: str) -> list[str] | None:  # breadth-first, so the shortest way back is shown
        seen, frontier = {start: [start]}, [start]
        while frontier:
            nxt = []
            for node in frontier:
                for succ in sorted(edges.get(node, {})):
                    if succ not in seen:
                        seen[succ] = seen[node] + [succ]
                        if succ == goal:
                            return seen[succ]
                        nxt.append(succ)
            frontier = nxt
        return None

    cycles, reported = [], set()
    for src in sorted(edges):
        for dst in sorted(edges[src]):
            back = path(dst, src)
            if back is None:
                continue
            ring = [src, *back]
            key = frozenset(zip(ring, ring[1:], strict=False))
            if key in reported:
                continue
            reported.add(key)
            where = ", ".join(f"{edges[a][b].file}:{edges[a][b].line}" for a, b in zip(ring, ring[1:], strict=False))
            cycles.append(" -> ".join(f"kdsl.{p}" for p in ring) + f" ({where})")
    return cycles


# --- the checks on kdsl itself ---------------------------------------------------------------------------------


def test_every_package_and_top_level_module_has_a_layer():
    files, _ = all_imports()
    assert len(files) > 50, f"found only {len(files)} files under {ROOT}"
    missing = sorted({package_of_file(f) for f in files} - set(LAYER))
    assert not missing, "give these a row in LAYER_TABLE (tests/unit/test_layers.py) and in DESIGN.md: " + ", ".join(
        f"kdsl.{m}" for m in missing)


def test_no_module_imports_a_higher_layer():
    _, imports = all_imports()
    problems = [line for key, line in layer_problems(imports) if key not in KNOWN_VIOLATIONS]
    assert not problems, "imports against the layer order (DESIGN.md; table in tests/unit/test_layers.py):\n" + (
        "\n".join(problems))


def test_the_allow_list_holds_only_violations_that_still_exist():
    _, imports = all_imports()
    present = {key for key, _ in layer_problems(imports)}
    stale = sorted(KNOWN_VIOLATIONS - present)
    assert not stale, "fixed, so remove from KNOWN_VIOLATIONS: " + ", ".join(stale)


def test_no_import_cycle_between_packages():
    _, imports = all_imports()
    cycles = package_cycles(imports)
    assert not cycles, "import cycles between kdsl packages (lazy imports included):\n" + "\n".join(cycles)


# --- the checker itself, on small sources ----------------------------------------------------------------------


def test_lazy_relative_typing_and_named_imports_are_all_seen():
    source = '''
from typing import TYPE_CHECKING
import kdsl.data
from . import mcts
from .. import graph
from ..agents.arbiter import Arbiter
if TYPE_CHECKING:
    from kdsl.serve import app
BACKEND = "kdsl.cli.main:app"

def later():
    import importlib
    from kdsl.report import page
    return importlib.import_module("kdsl.training.seesaw")
'''
    found = imports_of("kdsl/search/x.py", source)
    assert [(i.target, i.where) for i in found] == [
        ("kdsl.data", "module level"),
        ("kdsl.search.mcts", "module level"),
        ("kdsl.graph", "module level"),
        ("kdsl.agents.arbiter", "module level"),
        ("kdsl.serve.app", "under TYPE_CHECKING"),
        ("kdsl.cli.main", "by name"),
        ("kdsl.report.page", "in a function"),
        ("kdsl.training.seesaw", "by name"),
    ]
    problems = [line for _, line in layer_problems(found)]
    assert problems[0] == "kdsl/search/x.py:5 imports kdsl.graph (layer 7) from layer 4 (module level)"
    assert "kdsl/search/x.py:13 imports kdsl.report (layer 8) from layer 4 (in a function)" in problems
    assert len(problems) == 6  # everything but data (lower) and search.mcts (its own package)


def test_siblings_and_unknown_packages_are_reported():
    found = imports_of("kdsl/memory/x.py", "import kdsl.models\nfrom kdsl.nowhere import y\nimport kdsl.rules\n")
    assert [line for _, line in layer_problems(found)] == [
        "kdsl/memory/x.py:1 imports kdsl.models (layer 4) from its sibling kdsl.memory in the same layer (module level)",
        "kdsl/memory/x.py:2 imports kdsl.nowhere, whose package has no layer (module level)",
    ]


def test_from_kdsl_import_resolves_subpackages_and_keeps_names():
    found = imports_of("kdsl/rules/x.py", "from kdsl import __version__, graph\nfrom . import engine\n")
    assert [i.target for i in found] == ["kdsl", "kdsl.graph", "kdsl.rules.engine"]


def test_a_package_cycle_is_reported_with_its_files():
    found = [Import("kdsl/graph/a.py", 3, "kdsl.traces", "module level"),
             Import("kdsl/traces/b.py", 7, "kdsl.report.page", "in a function"),
             Import("kdsl/report/c.py", 9, "kdsl.graph.nodes", "in a function"),
             Import("kdsl/cli/d.py", 1, "kdsl.graph", "module level")]
    assert package_cycles(found) == [
        "kdsl.graph -> kdsl.traces -> kdsl.report -> kdsl.graph "
        "(kdsl/graph/a.py:3, kdsl/traces/b.py:7, kdsl/report/c.py:9)"]


@pytest.mark.parametrize(("rel", "package"), [
    ("kdsl/__init__.py", "kdsl"), ("kdsl/config.py", "config"), ("kdsl/graph/__init__.py", "graph"),
    ("kdsl/agents/arbiter.py", "agents"),
])
def test_files_map_to_their_package(rel, package):
    assert package_of_file(rel) == package
