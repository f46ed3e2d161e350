"""The import rules of ``docs/architecture.md``, checked on the source with ``ast``.

Every ``import`` and ``from ... import`` statement of every module under ``jaxgen/`` counts,
including those inside functions (lazy imports). Nothing is imported: the test needs no jax.
"""

from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (layer, packages that no module of the layer may import)
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("jaxgen.data", ("jaxgen.methods", "jaxgen.evaluate", "jaxgen.trainer", "jaxgen.experiment")),
    ("jaxgen.evaluate", ("jaxgen.methods",)),
    ("jaxgen.models", ("jaxgen.methods", "jaxgen.trainer", "jaxgen.experiment")),
    ("jaxgen.samplers", ("jaxgen.methods",)),
    # The building blocks families are made of: no family, no trainer.
    *(
        (layer, ("jaxgen.methods", "jaxgen.trainer", "jaxgen.experiment"))
        for layer in ("jaxgen.diffusion", "jaxgen.gan", "jaxgen.pixelcnn", "jaxgen.text")
    ),
)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def imported_modules(source: str, module: str, is_package: bool = False):
    """``(line, names)`` per import statement of ``source`` (the text of ``module``).

    ``import a.b`` names ``a.b``; ``from a import b`` names ``a`` and ``a.b`` (``b`` may be a
    submodule). Relative imports are resolved against ``module`` (a package's ``__init__``
    when ``is_package``).
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield node.lineno, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            yield node.lineno, [base] + [f"{base}.{alias.name}" for alias in node.names]


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """``"module:line imports name"`` for each import of ``source`` that breaks :data:`RULES`."""
    out = []
    for layer, forbidden in RULES:
        if not _within(module, layer):
            continue
        for line, names in imported_modules(source, module, is_package):
            bad = [n for n in names if any(_within(n, f) for f in forbidden)]
            if bad:
                out.append(f"{module}:{line} imports {bad[0]}")
    return out


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle ``[a, b, ..., a]`` of ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def jaxgen_modules():
    """``(dotted module name, path, is_package)`` of every ``.py`` file under ``jaxgen/``."""
    root = os.path.join(REPO, "jaxgen")
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, REPO)[: -len(".py")].split(os.sep)
            is_package = parts[-1] == "__init__"
            yield ".".join(parts[:-1] if is_package else parts), path, is_package


def test_layers_import_only_what_they_may():
    found = []
    for module, path, is_package in jaxgen_modules():
        with open(path, encoding="utf-8") as f:
            found += violations(f.read(), module, is_package)
    assert not found, "imports against docs/architecture.md:\n" + "\n".join(sorted(found))


def test_every_layer_of_the_rules_exists():
    modules = {m for m, _, _ in jaxgen_modules()}
    for layer, _ in RULES:
        assert layer in modules, layer


def test_data_modules_import_each_other_without_cycles():
    modules = {m: (p, pkg) for m, p, pkg in jaxgen_modules() if _within(m, "jaxgen.data")}
    graph = {}
    for module, (path, is_package) in modules.items():
        with open(path, encoding="utf-8") as f:
            source = f.read()
        graph[module] = {
            n for _, names in imported_modules(source, module, is_package)
            for n in names if n in modules and n != module
        }  # fmt: skip
    assert import_cycle(graph) is None, " -> ".join(import_cycle(graph))


def test_the_cycle_check_finds_a_cycle():
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize(
    "module, source",
    [
        ("jaxgen.data.pipeline", "from jaxgen.methods.base import Method\n"),
        ("jaxgen.data.sprites", "def f():\n    import jaxgen.evaluate.prompts\n"),
        ("jaxgen.data", "from ..methods import base\n"),
        ("jaxgen.evaluate.prompts", "from jaxgen import methods\n"),
        ("jaxgen.evaluate.likelihood", "from . import x\nfrom ..methods.vae import VAE\n"),
        ("jaxgen.models.unet", "from jaxgen.experiment import Experiment\n"),
        ("jaxgen.samplers.ddim", "import jaxgen.methods as m\n"),
    ],
)
def test_the_checker_catches_a_violation(module, source):
    is_package = module == "jaxgen.data"
    assert violations(source, module, is_package)


@pytest.mark.parametrize(
    "module, source",
    [
        ("jaxgen.data.pipeline", "from jaxgen.data.spec import DataSpec\nimport jaxgen.models\n"),
        ("jaxgen.evaluate.prompts", "from jaxgen.data import sprites\nfrom . import features\n"),
        ("jaxgen.methods.vae", "from jaxgen.evaluate import likelihood\n"),
        ("jaxgen.data.spec", "import jaxgen.methodsx\n"),  # a name that only starts alike
    ],
)
def test_the_checker_allows_what_the_rules_allow(module, source):
    assert not violations(source, module)


def _registry(path: str, name: str) -> dict[str, str]:
    """The dict literal assigned to ``name`` at the top level of ``path``, string values only."""
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return {
                k.value: v.value
                for k, v in zip(node.value.keys, node.value.values, strict=True)
                if isinstance(v, ast.Constant)
            }
    raise AssertionError(f"no {name} in {path}")


def _defines(target: str) -> bool:
    """Whether ``"module:function"`` names a top-level function of a module under jaxgen/."""
    module, function = target.split(":")
    path = os.path.join(REPO, *module.split(".")) + ".py"
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body)


@pytest.mark.parametrize(
    "path, name, expected",
    [
        ("jaxgen/evaluate/__init__.py", "EVALUATORS", {"likelihood", "prompts", "clip_zero_shot"}),
        ("jaxgen/data/sources.py", "SOURCES", {"fashion_mnist", "digits", "sprites"}),
    ],
)
def test_registries_name_every_entry_statically(path, name, expected):
    """Every evaluator type and data source is listed as ``"module:function"`` (imported on
    first use), none registers itself as a side effect of importing a family."""
    table = _registry(path, name)
    assert expected <= set(table)
    for key, target in table.items():
        assert _defines(target), f"{name}[{key!r}] = {target!r}: no such function"
