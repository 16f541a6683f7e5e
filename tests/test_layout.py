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
