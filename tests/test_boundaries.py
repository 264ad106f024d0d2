"""The package boundaries, read from the source: the import graph of `engine`
and `kernels` (lazy imports inside functions included) has no cycle; no
module imports a private module or name (`_x`) of a package it is not in; and
the stages a job passes through import only the stages before them."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "kernels")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


def imported(tree: ast.AST) -> list[str]:
    """Every dotted name an import statement reaches (module, and module.name)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return out


def _owner(name: str, mods: dict) -> str | None:
    """The module of ours that a dotted name lies in, if any."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        for name in imported(ast.parse(f.read_text())):
            target = _owner(name, mods)
            if target and target != m and not m.startswith(target + "."):
                graph[m].add(target)  # a module importing its own package is not a cycle
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(v):
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (cycle := visit(w)):
                return cycle
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (cycle := visit(v)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def private_imports(mods: dict[str, Path] | None = None) -> list[str]:
    mods = modules() if mods is None else mods
    out = []
    for m, f in mods.items():
        package = m if f.name == "__init__.py" else m.rpartition(".")[0]
        for name in imported(ast.parse(f.read_text())):
            if name.split(".")[0] not in PACKAGES:
                continue
            parts = name.split(".")
            for k, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:k])
                    if package != owner and not package.startswith(owner + "."):
                        out.append(f"{m} imports {name}")
                    break
    return out


def test_no_module_imports_another_packages_private_parts():
    assert private_imports() == []


def test_the_private_import_check_catches_one(tmp_path):
    stage = tmp_path / "a.py"
    stage.write_text("from engine.datasets._schema import encode\nimport kernels._lens\n")
    inside = tmp_path / "b.py"
    inside.write_text("from engine.datasets._schema import encode\n")
    found = private_imports({"engine.job": stage, "engine.datasets._casefile": inside})
    assert found == ["engine.job imports engine.datasets._schema",
                     "engine.job imports engine.datasets._schema.encode",
                     "engine.job imports kernels._lens"]


#: The layers of the code, bottom first: what every stage speaks (errors, the
#: files users hand in, the console, the request and decision-row types, the
#: statistics kernels), then the stages a job passes through in order, then
#: what composes them. A module may import its own layer and those below it.
LAYERS = [
    ("engine.errors", "engine.files", "engine.console", "engine.records", "engine.servers",
     "kernels"),
    ("engine.datasets",),  # the cases
    ("engine.prompts",),  # cases -> prompts
    ("engine.decisions",),  # prompts -> decisions (the engines, the store)
    ("engine.audit",),  # decisions -> lens statistics
    ("engine.spec",),  # the job's description, composed of the stages' sections
    ("engine.outputs",),  # results files, MLflow, report, compare, viewer
    ("engine.job",),  # spec -> cases -> prompts -> decisions -> audit -> outputs
    ("engine.align",),  # the ALIGN study, on the same stages
    ("engine.cli",),  # the `lensaudit` command
]


def layer_of(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    raise AssertionError(f"{module} is in no layer: add it to a stage, or to LAYERS")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} imports {t}" for m, targets in graph.items() if m != "engine"
                  for t in targets if t != "engine" and layer_of(t) > layer_of(m))


def test_every_stage_imports_only_the_stages_before_it():
    assert upward_imports(import_graph()) == []


def test_the_layer_check_catches_an_upward_import():
    graph = {"engine.audit._cells": {"engine.outputs._report", "engine.datasets"},
             "engine.datasets._schema": {"engine.errors"}}
    assert upward_imports(graph) == ["engine.audit._cells imports engine.outputs._report"]


def test_engine_holds_only_the_shared_modules_beside_its_stage_packages():
    loose = sorted(f.stem for f in (ROOT / "engine").glob("*.py") if f.stem != "__init__")
    assert loose == sorted(n.split(".")[1] for n in LAYERS[0] if n.startswith("engine."))


def test_kernels_leave_the_process_jax_settings_alone():
    """Importing and using the kernels keeps JAX's 64-bit mode off for everyone
    else, and the kernels still compute in float64 (a fresh process: nothing else
    has touched JAX's settings)."""
    import subprocess
    import sys

    code = ("import jax, numpy as np, kernels\n"
            "rng = np.random.default_rng(0)\n"
            "fit = kernels.fit_policy(rng.standard_normal((60, 3)), "
            "(rng.random(60) < 0.5).astype(float))\n"
            "print(jax.config.jax_enable_x64, fit.beta.dtype, jax.numpy.ones(2).dtype)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "float64", "float32"]
