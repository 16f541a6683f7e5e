"""The binary cache: one directory per module, linked together, built once under contention."""
from __future__ import annotations

import threading
from pathlib import Path

from tests.testbed import build


def test_bin_dir_links_every_output_to_its_own_module_cache() -> None:
    bin_dir = build.ensure_built()
    version = build.go_version(build.go_command())
    for module in build.MODULES:
        own = build.cache_root() / "modules" / module.cache_key(version)
        for name in module.outputs:
            assert (bin_dir / name).resolve() == own / name
            assert (own / name).stat().st_size > 0


def test_concurrent_cold_builds_of_one_key_build_it_once(tmp_path: Path) -> None:
    calls: list[Path] = []

    def make(staging: Path) -> None:
        calls.append(staging)
        (staging / "tool").write_text("built")

    target = tmp_path / "modules" / "tool-v1.0.0-0123456789"
    threads = [threading.Thread(target=build._cached, args=(target, ["tool"], make)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert (target / "tool").read_text() == "built"
    assert not target.with_name(f"{target.name}.partial").exists()
