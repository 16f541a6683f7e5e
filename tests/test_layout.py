"""The package layout must never shadow the standard library's `operator` module."""
import pathlib
import subprocess
import sys
import sysconfig

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_stdlib_operator_is_not_shadowed_from_repo_root() -> None:
    code = (
        "import operator, swiftdiffusion.operator, swiftdiffusion.runtime;"
        "print(operator.__file__);"
        "assert operator.add(2, 3) == 5 and operator.itemgetter(1)([0, 7]) == 7"
    )
    # Run from the repository root, where a folder named operator/ sits on sys.path[0].
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    assert pathlib.Path(out).resolve().parent == pathlib.Path(sysconfig.get_paths()["stdlib"]).resolve()


def test_project_code_imports_under_swiftdiffusion_namespace() -> None:
    import swiftdiffusion.operator
    import swiftdiffusion.runtime

    assert pathlib.Path(swiftdiffusion.operator.__file__).resolve().is_relative_to(REPO / "operator")
    assert pathlib.Path(swiftdiffusion.runtime.__file__).resolve().is_relative_to(REPO / "runtime")


RUNTIME = REPO / "runtime" / "swiftdiffusion" / "runtime"


def module_imports() -> dict[str, set[str]]:
    """Every runtime module and the runtime modules it imports, deferred imports included."""
    import ast

    graph: dict[str, set[str]] = {}
    for path in RUNTIME.rglob("*.py"):
        parts = path.relative_to(RUNTIME.parents[1]).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("swiftdiffusion.runtime"):
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("swiftdiffusion.runtime"))
        graph[name] = targets
    return graph


def test_runtime_modules_import_each_other_without_cycles() -> None:
    graph = module_imports()
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            if target not in graph:
                continue
            assert state.get(target) != "open", "import cycle: " + " -> ".join(path + [target])
            if target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_servers_never_import_development_tooling() -> None:
    code = (
        "import sys, swiftdiffusion.runtime.serving.base_server, swiftdiffusion.runtime.serving.controlnet_server;"
        "import swiftdiffusion.runtime.cfg.serving;"
        "print(sorted(m for m in sys.modules if m.startswith('swiftdiffusion.runtime.dev')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
