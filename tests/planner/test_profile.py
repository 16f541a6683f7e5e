"""The shipped profiles are what their sources say."""
from __future__ import annotations

from pathlib import Path

import pytest

from swiftdiffusion.planner import profile, service

MEASUREMENTS = Path(__file__).resolve().parents[2] / "docs" / "measurements" / "2026-12-01"


def test_cpu_profile_is_derived_from_the_benchmark_runs() -> None:
    shipped = profile.load(profile.PROFILES / "cpu-2026-12-01.json")
    derived = profile.from_benchmarks(MEASUREMENTS, pod_start_seconds=shipped.pod_start_seconds,
                                      controlnet_load_seconds=shipped.controlnet_load_seconds,
                                      controlnet_bytes=shipped.controlnet_bytes)
    assert derived.model_dump(exclude={"source"}) == shipped.model_dump(exclude={"source"})


def test_cpu_profile_predicts_the_benchmarks_end_to_end_times() -> None:
    """The decoupled and diffusers wall times of controlnet-30.json, from per-step parts."""
    p = profile.load(profile.PROFILES / "cpu-2026-12-01.json")
    w = service.Work(steps=30, pixels=256 * 256, controlnets=1, lora_ks=())
    assert service.decoupled(p, w).seconds == pytest.approx(15.756, rel=0.01)  # "decoupled 1+1, embedded once"
    assert service.monolithic(p, w).seconds == pytest.approx(21.667, rel=0.1)  # "diffusers, 1 core"


def test_gpu_profile_reproduces_the_papers_published_latencies() -> None:
    p = profile.load(profile.PROFILES / "h800-paper.json")
    plain = service.Work(steps=50, pixels=1024 * 1024, controlnets=0, lora_ks=())
    one_cn = service.Work(steps=50, pixels=1024 * 1024, controlnets=1, lora_ks=())
    assert service.monolithic(p, plain).seconds == pytest.approx(2.9, rel=0.01)
    assert service.monolithic(p, one_cn).seconds == pytest.approx(4.5, rel=0.01)
    assert service.monolithic(p, one_cn).seconds / service.decoupled(p, one_cn).seconds == pytest.approx(1.42, abs=0.02)
    lora = service.Work(steps=50, pixels=1024 * 1024, controlnets=0, lora_ks=(10,))
    assert service.monolithic(p, lora).seconds / service.monolithic(p, plain).seconds == pytest.approx(1.8, abs=0.01)
    assert service.decoupled(p, lora).seconds - service.decoupled(p, plain).seconds == pytest.approx(0.23, abs=0.01)
