"""The profiling command (module and `swiftdiffusion profile-lora`) on the tiny model: K lands
in the LoRA's sidecar, where the store finds it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from swiftdiffusion.runtime.cli import main as cli_main
from swiftdiffusion.runtime.lora import profiles
from swiftdiffusion.runtime.lora.profile import main
from swiftdiffusion.runtime.lora.store import LoraEntry, LoraStore


def test_profile_command_stores_the_first_step_below_the_threshold(tiny_model_set, lora_dir, tmp_path, capsys):
    lora = tmp_path / "a.safetensors"
    shutil.copy(lora_dir / "a.safetensors", lora)
    model = str(tiny_model_set / "base")
    args = ["--model", model, "--lora", str(lora), "--steps", "6", "--width", "64", "--height", "64",
            "--prompt", "a red cube on a table", "--device", "cpu"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    (profile,) = profiles.read_profiles(str(lora))
    assert (profile.base_model, profile.revision, profile.steps, profile.k) == (model, "main", 6, printed["k"])
    assert len(profile.similarity) == 6 and profile.similarity[-1] < 0.99  # the LoRA visibly changes the result
    assert profile.k == profiles.first_step_below(list(profile.similarity), 0.99) < 6
    assert LoraStore().profiled_k(LoraEntry("a", str(lora)), model, "main", 6) == profile.k

    assert cli_main(["profile-lora", *args, "--threshold", "0"]) == 0  # replaces only its own entry
    (replaced,) = profiles.read_profiles(str(lora))
    assert replaced.k == 6 and Path(printed["sidecar"]) == Path(profiles.sidecar_for(str(lora)))
