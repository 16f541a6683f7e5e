"""`swiftdiffusion profile`: options it cannot measure with are refused before anything starts.
(The measurement itself is checked against the fleet in tests/fleet/test_calibration.py.)"""
from __future__ import annotations

from pathlib import Path

import pytest

from swiftdiffusion.runtime.cli import main


@pytest.mark.parametrize("option", [["--repeats", "0"], ["--steps", "0"], ["--size", "4"]])
def test_bad_options_exit_2_naming_them_and_write_nothing(option: list[str], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "profile.json"
    assert main(["profile", "--models", str(tmp_path / "models"), "--out", str(out), *option]) == 2
    assert option[0] in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "models").exists()
