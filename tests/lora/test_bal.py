"""BAL on the runtime's base engine, compared with diffusers' own LoRA loading."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from swiftdiffusion.runtime.errors import Cancelled, NotFound
from swiftdiffusion.runtime.lora.errors import LoraFormatError, LoraMismatchError, LoraNotFoundError
from swiftdiffusion.runtime.lora.store import LoraEntry
from swiftdiffusion.runtime.pipeline.step_hooks import LoraUse
from tests.lora.engine_setup import STEPS, BalEngine, bal_engine, diffusers_with_loras, params
from tests.lora.fixtures import GatedFileServer

NAMES = ("a", "a-kohya", "b", "te", "corrupt", "mismatched", "partial")
TOLERANCE = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def replica(tiny_model_set: Path, lora_dir: Path) -> Iterator[BalEngine]:
    entries = [LoraEntry(name, str(lora_dir / f"{name}.safetensors")) for name in NAMES]
    entries += [LoraEntry("missing", str(lora_dir / "missing.safetensors")), LoraEntry("pickled", str(lora_dir / "pickled.ckpt"))]
    engine = bal_engine(tiny_model_set, entries, default_k=0)
    yield engine
    engine.factory.close()


@pytest.fixture(scope="module")
def base_output(replica: BalEngine) -> torch.Tensor:
    return replica.run()


@pytest.fixture
def untouched(replica: BalEngine) -> Iterator[None]:
    """Asserts, after the test, that every base weight equals its value before, bit for bit."""
    before = replica.weights()
    yield
    after = replica.weights()
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert not changed, f"base weights changed: {changed[:5]}"


def test_k0_one_lora_matches_diffusers_fused(replica, tiny_model_set, lora_dir, base_output, untouched):
    ours = replica.run(LoraUse("a", scale=0.8, k=0))
    reference = diffusers_with_loras(tiny_model_set, [(lora_dir / "a.safetensors", 0.8)])
    torch.testing.assert_close(ours, reference, **TOLERANCE)
    assert (ours - base_output).abs().max() > 100 * TOLERANCE["atol"], "the LoRA has no visible effect"


def test_k0_two_loras_give_the_sum_of_their_deltas_as_diffusers(replica, tiny_model_set, lora_dir, base_output, untouched):
    ours = replica.run(LoraUse("a", scale=0.8, k=0), LoraUse("b", scale=0.5, k=0))
    reference = diffusers_with_loras(tiny_model_set, [(lora_dir / "a.safetensors", 0.8), (lora_dir / "b.safetensors", 0.5)])
    torch.testing.assert_close(ours, reference, **TOLERANCE)
    only_a = replica.run(LoraUse("a", scale=0.8, k=0))
    assert (ours - only_a).abs().max() > 100 * TOLERANCE["atol"]


def test_text_encoder_parts_are_merged_before_the_prompt_is_encoded(replica, tiny_model_set, lora_dir, untouched):
    ours = replica.run(LoraUse("te", scale=1.0, k=5))
    reference = diffusers_with_loras(tiny_model_set, [(lora_dir / "te.safetensors", 1.0)])
    torch.testing.assert_close(ours, reference, **TOLERANCE)


def test_kohya_and_peft_files_give_identical_outputs(replica, untouched):
    peft = replica.run(LoraUse("a", scale=0.8, k=0))
    kohya = replica.run(LoraUse("a-kohya", scale=0.8, k=0))
    assert torch.equal(peft, kohya)


def _gated_engine(tiny_model_set: Path, server: GatedFileServer) -> BalEngine:
    return bal_engine(tiny_model_set, [LoraEntry("a", f"{server.url}/a.safetensors")], default_k=STEPS)


def test_lora_never_ready_before_the_end_gives_the_base_output(tiny_model_set, http_loras, base_output):
    http_loras.gate("a.safetensors")  # held until the fixture ends
    gated = _gated_engine(tiny_model_set, http_loras)
    before = gated.weights()
    try:
        assert torch.equal(gated.run(LoraUse("a", scale=0.8)), base_output)
    finally:
        gated.factory.close()
    assert all(torch.equal(value, gated.weights()[key]) for key, value in before.items())


class _ReleaseAtStep:
    """Wraps the real BAL hook: opens the HTTP gate only once the loop reaches step `k`,
    so the LoRA cannot be ready before and the loop must block there."""

    def __init__(self, factory, gate: threading.Event, k: int) -> None:
        self.factory, self.gate, self.k, self.hook = factory, gate, k, None

    def __call__(self, loras, unet, steps):
        self.hook = self.factory(loras, unet, steps)
        outer = self

        class Hook:
            def before_encode(self) -> None:
                outer.hook.before_encode()

            def before_step(self, index: int) -> None:
                if index == outer.k:
                    threading.Timer(0.3, outer.gate.set).start()
                outer.hook.before_step(index)

            def close(self) -> None:
                outer.hook.close()

        return Hook()


def test_loop_blocks_at_k_and_matches_diffusers_with_the_lora_from_step_k(tiny_model_set, lora_dir, http_loras):
    k = 2
    gated = _gated_engine(tiny_model_set, http_loras)
    release = _ReleaseAtStep(gated.factory, http_loras.gate("a.safetensors"), k)
    gated.engine.step_hooks = release
    blocked_before = gated.factory.store.metrics.blocked_steps._value.get()
    try:
        ours = gated.run(LoraUse("a", scale=0.8, k=k))
    finally:
        gated.factory.close()
    assert release.hook.pending[0].merged_at == k
    assert gated.factory.store.metrics.blocked_steps._value.get() == blocked_before + 1
    reference = diffusers_with_loras(tiny_model_set, [(lora_dir / "a.safetensors", 0.8)], from_step=k)
    torch.testing.assert_close(ours, reference, **TOLERANCE)


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        ("corrupt", LoraFormatError, "safetensors"),
        ("mismatched", LoraMismatchError, "do not match the base model"),
        ("partial", LoraMismatchError, "refusing a partial LoRA"),
        ("missing", LoraNotFoundError, "no such file"),
        ("pickled", LoraFormatError, "pickled checkpoints are refused"),
        ("nobody", NotFound, "unknown LoRA 'nobody'"),
    ],
)
def test_failed_request_restores_base_weights_with_a_clear_error(replica, base_output, untouched, bad, error, message):
    with pytest.raises(error, match=message):
        replica.run(LoraUse("a", scale=0.8, k=0), LoraUse(bad, scale=1.0, k=0))
    assert torch.equal(replica.run(), base_output), "the next request must see the base model"


def test_cancelled_request_restores_base_weights(replica, base_output, untouched):
    seen = []

    def cancel_after_two_steps() -> bool:
        seen.append(None)
        return len(seen) > 2

    with pytest.raises(Cancelled):
        replica.engine.generate(params(LoraUse("a", scale=0.8, k=0)), is_cancelled=cancel_after_two_steps, decode=False)
    assert torch.equal(replica.run(), base_output)


def test_concurrent_requests_with_different_loras_each_get_their_own(replica, base_output, untouched):
    # K=0: merged before the first step, so each output is deterministic (with K > 0 it
    # depends, by design, on the step at which the load finished).
    uses = {"a": (LoraUse("a", scale=0.8, k=0),), "b": (LoraUse("b", scale=0.8, k=0),), "base": ()}
    alone = {name: replica.run(*loras) for name, loras in uses.items()}
    assert torch.equal(alone["base"], base_output)
    results: dict[str, list[torch.Tensor]] = {name: [] for name in uses}

    def request(name: str) -> None:
        results[name].append(replica.run(*uses[name]))

    threads = [threading.Thread(target=request, args=(name,)) for name in ("a", "b", "base", "a", "b", "base")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for name, outputs in results.items():
        assert len(outputs) == 2
        assert all(torch.equal(output, alone[name]) for output in outputs), f"request {name} saw another's weights"
