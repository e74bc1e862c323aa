"""The shape of the code: no import cycles (imports inside functions counted), `sae` never imports
`interp`, interp's rooms import only the rooms below them, the report never imports model code,
command-line code apart from library code, and no module over 500 lines."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("interp", "sae")
CLI_MODULES = {"sae.cli", "sae.options", "sae.command"}  # besides interp.app.cli.*: the sae command line and its kit
# interp's rooms, bottom to top: a module imports only modules of its own room or of rooms below it
ROOMS = ("interp.model", "interp.activations", "interp.interventions", "interp.features", "interp.app")
ROOM_OF_TOP_LEVEL = {"interp": None, "interp.__main__": "interp.app"}  # the package itself, and `python -m interp`
MODEL_CODE = {
    "interp.model.transformer",
    "interp.model.compat",
    "interp.activations.hooks",
    "interp.activations.sources",
    "interp.model.training",
}


def module_files() -> dict[str, pathlib.Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            files[name] = path
    return files


def imports_of(path: pathlib.Path, modules: set[str]) -> set[str]:
    """Project modules `path` imports anywhere in it (module level or inside functions); a package's
    submodule when `from package import submodule` names one."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for target in targets:
            if target in modules:
                found.add(target)
    return found


def external_imports_of(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (the import cycles)."""
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert reachable(graph, "d") == {"a", "b", "c"}


def test_no_import_cycles_counting_imports_inside_functions():
    assert strongly_connected(import_graph()) == []


def test_sae_source_never_imports_interp():
    graph = import_graph()
    offenders = sorted(
        f"{m} imports {t}"
        for m, targets in graph.items()
        if m.startswith("sae")
        for t in targets
        if t.split(".")[0] == "interp"
    )
    assert not offenders, "\n".join(offenders)


def room(module: str) -> str | None:
    if module in ROOM_OF_TOP_LEVEL:
        return ROOM_OF_TOP_LEVEL[module]
    return next((r for r in ROOMS if module == r or module.startswith(r + ".")), "outside")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'A imports B' for every import of a module from a room above the importer's."""
    rank = {r: i for i, r in enumerate(ROOMS)}
    found = []
    for module, targets in graph.items():
        if not module.startswith("interp") or room(module) is None:
            continue
        for target in targets:
            if target.startswith("interp") and room(target) is not None and rank[room(target)] > rank[room(module)]:
                found.append(f"{module} ({room(module)}) imports {target} ({room(target)})")
    return sorted(found)


def test_every_interp_module_lives_in_a_room():
    outside = [m for m in module_files() if m.startswith("interp") and room(m) == "outside"]
    assert not outside, outside


def test_no_room_imports_a_room_above_it():
    assert upward_imports(import_graph()) == []


def test_the_layer_check_finds_a_planted_upward_import():
    graph = {
        "interp.model.corpus": {"interp.features.scorecard.concepts"},  # the model room reaching up
        "interp.features.scorecard.concepts": set(),
        "interp.app.demo": {"interp.model.corpus"},  # downward: allowed
    }
    assert upward_imports(graph) == [
        "interp.model.corpus (interp.model) imports interp.features.scorecard.concepts (interp.features)"
    ]


def test_the_report_never_imports_model_code():
    graph, files = import_graph(), module_files()
    for module in (m for m in graph if m.startswith("interp.app.report")):
        closure = reachable(graph, module) | {module}
        assert not closure & MODEL_CODE, f"{module} reaches {sorted(closure & MODEL_CODE)}"
        external = set().union(*(external_imports_of(files[m]) for m in closure))
        assert "transformer_lens" not in external, f"{module} reaches transformer_lens"


def test_command_line_code_lives_in_the_cli_modules():
    offenders = [
        name
        for name, path in module_files().items()
        if "argparse" in external_imports_of(path) and not (name.startswith("interp.app.cli") or name in CLI_MODULES)
    ]
    assert not offenders, f"argparse outside the command-line modules: {offenders}"


def test_no_module_is_over_500_lines():
    long = {name: n for name, path in module_files().items() if (n := len(path.read_text().splitlines())) > 500}
    assert not long, long


def test_importing_every_sae_module_loads_no_interp_module():
    modules = sorted(name for name in module_files() if name.startswith("sae") and not name.endswith("__main__"))
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m == 'interp' or m.startswith('interp.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
