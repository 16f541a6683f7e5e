"""The LoRA store: sources, formats, refusals, the host cache, K selection and the lock."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from swiftdiffusion.runtime.lora import profiles
from swiftdiffusion.runtime.lora.bal import BalHookFactory
from swiftdiffusion.runtime.lora.errors import LoraFormatError, LoraNotFoundError
from swiftdiffusion.runtime.lora.formats import bind_lora
from swiftdiffusion.runtime.lora.merge import WeightPatch
from swiftdiffusion.runtime.lora.replica_lock import ReplicaWeightsLock
from swiftdiffusion.runtime.lora.store import LoraEntry, LoraStore
from swiftdiffusion.runtime.pipeline.step_hooks import LoraUse
from tests.lora.fixtures import components, load_pipeline


@pytest.fixture(scope="module")
def pipeline(tiny_model_set: Path):
    return load_pipeline(tiny_model_set)


def _same_deltas(first, second) -> bool:
    pairs = list(zip(sorted(first, key=lambda d: d.module), sorted(second, key=lambda d: d.module)))
    return len(first) == len(second) and all(
        a.module == b.module and a.weight is b.weight and a.scaling == b.scaling
        and torch.equal(a.up, b.up) and torch.equal(a.down, b.down)
        for a, b in pairs
    )


def test_kohya_and_peft_keys_bind_to_the_same_layers_and_factors(pipeline, lora_dir):
    peft = bind_lora((lora_dir / "a.safetensors").read_bytes(), components(pipeline))
    kohya = bind_lora((lora_dir / "a-kohya.safetensors").read_bytes(), components(pipeline))
    assert _same_deltas(peft, kohya)
    kinds = {d.module.rsplit(".", 1)[-1] for d in peft}
    assert {"to_q", "0", "proj", "2", "proj_in", "proj_out"} <= kinds  # attention, feed-forward, projections
    assert {d.scaling for d in peft} == {0.5}  # alpha 2 / rank 4


def test_a_lora_over_http_binds_exactly_as_the_local_file(pipeline, lora_dir, http_loras):
    store = LoraStore([LoraEntry("a", f"{http_loras.url}/a.safetensors")])
    over_http = bind_lora(store.read(store.entry("a")), components(pipeline))
    assert _same_deltas(over_http, bind_lora((lora_dir / "a.safetensors").read_bytes(), components(pipeline)))


def test_http_404_is_not_found(http_loras):
    store = LoraStore([LoraEntry("gone", f"{http_loras.url}/gone.safetensors")])
    with pytest.raises(LoraNotFoundError, match="HTTP 404"):
        store.read(store.entry("gone"))


def test_host_cache_serves_repeat_loads_without_reading_storage(lora_dir):
    store = LoraStore([LoraEntry("a", str(lora_dir / "a.safetensors"))], cache_bytes=1 << 30)
    first = store.read(store.entry("a"))
    assert store.read(store.entry("a")) is first
    metrics = store.metrics
    assert (metrics.cache_hits._value.get(), metrics.cache_misses._value.get()) == (1, 1)
    assert metrics.load_bytes._value.get() == len(first)


def test_cache_evicts_the_least_recently_used_file_beyond_its_budget(lora_dir):
    sizes = {name: (lora_dir / f"{name}.safetensors").stat().st_size for name in ("a", "b")}
    store = LoraStore([LoraEntry(n, str(lora_dir / f"{n}.safetensors")) for n in sizes], cache_bytes=max(sizes.values()))
    for name in ("a", "b", "a"):
        store.read(store.entry(name))
    assert store.metrics.cache_hits._value.get() == 0
    assert store.metrics.cache_misses._value.get() == 3


def test_names_resolve_to_config_then_the_store_folder_and_never_to_other_paths(tmp_path, lora_dir):
    (tmp_path / "loras").mkdir()
    (tmp_path / "loras" / "shelf.safetensors").write_bytes((lora_dir / "a.safetensors").read_bytes())
    store = LoraStore([LoraEntry("listed", "/elsewhere/x.safetensors", 0.7, 3)], model_store=tmp_path)
    assert store.entry("listed") == LoraEntry("listed", "/elsewhere/x.safetensors", 0.7, 3)
    assert store.entry("shelf") == LoraEntry("shelf", str(tmp_path / "loras" / "shelf.safetensors"))
    for name in ("nobody", "../loras/shelf", ".hidden", "a/b"):
        with pytest.raises(LoraNotFoundError):
            store.entry(name)


def test_config_items_resolve_relative_sources_under_the_model_store(tmp_path):
    item = {"name": "p", "source": "loras/p.safetensors", "scale": 0.8, "k": 8}
    assert LoraEntry.from_config(item, tmp_path) == LoraEntry("p", str(tmp_path / "loras/p.safetensors"), 0.8, 8)


@pytest.mark.parametrize("name", ["model.ckpt", "model.bin", "model.pt", "model.pth"])
def test_pickled_checkpoints_are_refused_before_reading(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x80\x04K\x01.")
    store = LoraStore([LoraEntry("p", str(tmp_path / name))])
    with pytest.raises(LoraFormatError, match="pickled checkpoints are refused"):
        store.read(store.entry("p"))


def test_k_comes_from_the_request_then_config_then_profile_then_default(pipeline, lora_dir, tmp_path):
    lora = tmp_path / "p.safetensors"
    lora.write_bytes((lora_dir / "a.safetensors").read_bytes())
    entries = [LoraEntry("configured", str(lora), k=6), LoraEntry("profiled", str(lora)), LoraEntry("plain", str(lora_dir / "b.safetensors"))]
    factory = BalHookFactory(LoraStore(entries), {}, default_k=9, base_model="tiny", revision="main")
    profiles.write_profile(Path(profiles.sidecar_for(str(lora))), profiles.KProfile("tiny", "main", 20, 4, 0.99, (1.0,) * 20))

    def bound(use: LoraUse, steps: int = 20) -> int:
        hook = factory(((use,)), pipeline.unet, steps)
        hook.close()
        return hook.pending[0].k

    assert bound(LoraUse("configured", k=2)) == 2
    assert bound(LoraUse("configured")) == 6
    assert bound(LoraUse("profiled")) == 4
    assert bound(LoraUse("profiled"), steps=40) == 8  # the same fraction of a longer schedule
    assert bound(LoraUse("plain")) == 9
    factory.close()


def test_first_step_below_threshold_is_k():
    assert profiles.first_step_below([1.0, 0.995, 0.98, 0.9], 0.99) == 2
    assert profiles.first_step_below([1.0, 0.999], 0.99) == 2  # never below: BAL never has to wait


def test_lora_requests_hold_the_weights_alone_while_base_requests_share():
    lock, events = ReplicaWeightsLock(), []
    lock.acquire(exclusive=False)
    lock.acquire(exclusive=False)  # two base-only requests together

    def writer() -> None:
        lock.acquire(exclusive=True)
        events.append("lora")
        lock.release(exclusive=True)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.2)
    assert events == []  # waits for both readers
    lock.release(exclusive=False)
    lock.release(exclusive=False)
    thread.join(timeout=5)
    assert events == ["lora"]


def test_merged_weights_equal_diffusers_fused_weights_and_restore_exactly(tiny_model_set, lora_dir):
    ours, fused = load_pipeline(tiny_model_set), load_pipeline(tiny_model_set)
    fused.load_lora_weights(str(lora_dir / "te.safetensors"), adapter_name="te")
    fused.fuse_lora(components=["unet", "text_encoder", "text_encoder_2"], lora_scale=0.7)
    modules = components(ours, text=True)
    before = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in modules.items()}
    patch = WeightPatch()
    patch.merge(bind_lora((lora_dir / "te.safetensors").read_bytes(), modules), 0.7)
    for name, module in modules.items():
        reference = {k.replace(".base_layer", ""): v for k, v in getattr(fused, name).state_dict().items() if "lora_" not in k}
        merged = module.state_dict()
        assert all(torch.allclose(merged[k], reference[k], rtol=0, atol=1e-6) for k in merged), name
        assert any(not torch.equal(merged[k], before[name][k]) for k in merged), name
    patch.restore()
    for name, module in modules.items():
        assert all(torch.equal(v, before[name][k]) for k, v in module.state_dict().items()), name
