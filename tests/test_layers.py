"""The package's architecture, read from its imports: layers that import only downward, no cycles,
thin entry points that nothing imports, and library layers free of the run-time stack."""

import ast
from pathlib import Path

import pytest

import pmfm

PACKAGE = Path(pmfm.__file__).parent
ENTRY_POINTS = (
    "simulate",
    "generate",
    "train",
    "predict",
    "fit",
    "targets",
    "experiment",
    "benchmark",
    "compare",
)
# lowest first; a module may import its own layer (without cycles) and the ones before it
LAYERS = {
    "params": ("pmfm.params", "pmfm.data"),
    "physics": ("pmfm.physics",),
    "sim": ("pmfm.sim",),
    "cost": ("pmfm.cost",),
    "evaluate": ("pmfm.evaluate",),
    "plots": ("pmfm.plots",),
    "datasets": ("pmfm.datasets",),
    "models": ("pmfm.models",),
    "search": ("pmfm.search",),
    "pipelines": ("pmfm.pipelines", "pmfm.studies"),
    "entry": tuple(f"pmfm.{name}" for name in ENTRY_POINTS),
}
LIBRARY = ("params", "physics", "sim", "cost", "evaluate")  # what runs on a machine with torch alone
RUN_TIME_STACK = ("hydra", "omegaconf", "lightning", "wandb", "cma")
MAX_ENTRY_LINES = 80


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (``pmfm.sim`` for pmfm/sim/__init__.py)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def layer_of(module: str) -> str | None:
    for layer, prefixes in LAYERS.items():
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return layer
    return None


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """What ``module`` imports anywhere in its file: pmfm modules by name, other packages by top name."""
    out = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base]).strip(".")
            for alias in node.names:  # ``from pmfm.sim import noise`` imports the module pmfm.sim.noise
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_every_module_has_a_layer():
    unassigned = sorted(m for m in modules() if m not in ("pmfm", "pmfm.conf") and layer_of(m) is None)
    assert not unassigned, f"modules outside the layer table: {unassigned}"


def test_imports_only_go_down(graph):
    order = list(LAYERS)
    upward = []
    for module, targets in graph.items():
        mine = layer_of(module)
        for target in targets:
            theirs = layer_of(target)
            if mine and theirs and order.index(theirs) > order.index(mine):
                upward.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def test_no_import_cycles(graph):
    edges = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node, [])):
            pytest.fail("import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]) :]))


def test_nothing_imports_an_entry_point(graph):
    entries = set(LAYERS["entry"])
    offenders = sorted(f"{m} imports {t}" for m, ts in graph.items() for t in ts & entries)
    assert not offenders, offenders


def test_library_layers_run_without_the_run_time_stack(graph):
    offenders = []
    for module, targets in graph.items():
        if layer_of(module) in LIBRARY:
            offenders += [f"{module} imports {t}" for t in targets if t.split(".")[0] in RUN_TIME_STACK]
    assert not offenders, offenders


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_points_are_thin(name):
    path = PACKAGE / f"{name}.py"
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_ENTRY_LINES, f"{path.name}: {len(lines)} lines"
    tree = ast.parse(path.read_text())
    defined = [
        n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
    ]
    assert defined in ([], ["main"]), f"{path.name} defines {defined}: the work belongs in a library function"


def test_the_layer_test_sees_an_upward_import(tmp_path):
    """The checks above would catch a violation: a physics module importing the pipelines."""
    bad = tmp_path / "pmfm" / "physics"
    bad.mkdir(parents=True)
    (bad / "oops.py").write_text("from pmfm.pipelines import config\nimport hydra\n")
    known = {"pmfm.physics.oops": bad / "oops.py", "pmfm.pipelines.config": bad}
    found = imports("pmfm.physics.oops", bad / "oops.py", known)
    assert found == {"pmfm.pipelines.config", "hydra"}
    order = list(LAYERS)
    assert order.index(layer_of("pmfm.pipelines.config")) > order.index(layer_of("pmfm.physics.oops"))
