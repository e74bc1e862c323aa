"""The shape of the code: no import cycles (imports inside functions counted), `sae` never imports
`interp`, the report never imports model code, command-line code apart from library code, and no
module over 500 lines."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("interp", "sae")
CLI_MODULES = {"sae.cli", "sae.options"}  # besides interp.cli.*: the sae command line and its renderer
MODEL_CODE = {"interp.model", "interp.compat", "interp.hooks", "interp.pipeline", "interp.model_training"}


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


def test_the_report_never_imports_model_code():
    graph, files = import_graph(), module_files()
    for module in (m for m in graph if m.startswith("interp.report")):
        closure = reachable(graph, module) | {module}
        assert not closure & MODEL_CODE, f"{module} reaches {sorted(closure & MODEL_CODE)}"
        external = set().union(*(external_imports_of(files[m]) for m in closure))
        assert "transformer_lens" not in external, f"{module} reaches transformer_lens"


def test_command_line_code_lives_in_the_cli_modules():
    offenders = [
        name
        for name, path in module_files().items()
        if "argparse" in external_imports_of(path) and not (name.startswith("interp.cli") or name in CLI_MODULES)
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
