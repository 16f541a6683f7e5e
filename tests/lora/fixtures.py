"""LoRA fixtures: random LoRA files for the tiny model set and a loopback HTTP file server."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import safetensors.torch
import torch
from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

from swiftdiffusion.runtime.dev.synthetic_lora import write_random_lora

STRENGTH = 0.3


def load_pipeline(model_set: Path) -> StableDiffusionXLPipeline:
    pipeline = StableDiffusionXLPipeline.from_pretrained(model_set / "base", local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def components(pipeline: StableDiffusionXLPipeline, text: bool = False) -> dict[str, torch.nn.Module]:
    found = {"unet": pipeline.unet}
    if text:
        found.update(text_encoder=pipeline.text_encoder, text_encoder_2=pipeline.text_encoder_2)
    return found


def _other_unet() -> UNet2DConditionModel:
    """A UNet of another shape, to make a LoRA that does not fit the tiny base model."""
    return UNet2DConditionModel(
        block_out_channels=(32, 32), layers_per_block=1, cross_attention_dim=32, norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )


@pytest.fixture(scope="session")
def lora_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_set: Path) -> Path:
    """a (rank 4, alpha 2) in PEFT and kohya keys, b (rank 8), te (UNet + both text
    encoders), and broken files: corrupt (truncated), pickled, mismatched, partial."""
    folder = tmp_path_factory.mktemp("loras")
    pipeline = load_pipeline(tiny_model_set)
    unet_only, with_text = components(pipeline), components(pipeline, text=True)
    write_random_lora(folder / "a.safetensors", unet_only, rank=4, alpha=2, seed=1, strength=STRENGTH)
    write_random_lora(folder / "a-kohya.safetensors", unet_only, rank=4, alpha=2, seed=1, strength=STRENGTH, key_format="kohya")
    write_random_lora(folder / "b.safetensors", unet_only, rank=8, seed=2, strength=STRENGTH)
    write_random_lora(folder / "te.safetensors", with_text, rank=4, seed=3, strength=STRENGTH)
    write_random_lora(folder / "mismatched.safetensors", {"unet": _other_unet()}, rank=4, seed=4)
    partial_lora = safetensors.torch.load_file(folder / "a.safetensors")
    partial_lora["unet.down_blocks.0.attentions.7.proj_in.lora_A.weight"] = torch.zeros(4, 32)
    partial_lora["unet.down_blocks.0.attentions.7.proj_in.lora_B.weight"] = torch.zeros(32, 4)
    safetensors.torch.save_file(partial_lora, folder / "partial.safetensors")
    whole = (folder / "b.safetensors").read_bytes()
    (folder / "corrupt.safetensors").write_bytes(whole[: len(whole) // 2])  # header intact, data cut short
    (folder / "pickled.ckpt").write_bytes(b"\x80\x04K\x01.")
    return folder


@dataclass
class GatedFileServer:
    """Serves a folder over loopback HTTP; a path in `gates` sends its tensors only once its event is set."""

    url: str
    gates: dict[str, threading.Event] = field(default_factory=dict)

    def gate(self, name: str) -> threading.Event:
        return self.gates.setdefault(f"/{name}", threading.Event())


class _GatedHandler(SimpleHTTPRequestHandler):
    """Slow storage: a gated file's safetensors header goes out at once, the tensors only
    once the gate opens."""

    server_state: GatedFileServer

    def copyfile(self, source, outputfile) -> None:  # noqa: ANN001 (http.server's signature)
        gate = self.server_state.gates.get(self.path)
        if gate is not None:
            prefix = source.read(8)
            outputfile.write(prefix + source.read(int.from_bytes(prefix, "little")))
            outputfile.flush()
            gate.wait(timeout=60)
        super().copyfile(source, outputfile)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows failures, not access logs."""


@pytest.fixture
def http_loras(lora_dir: Path) -> Iterator[GatedFileServer]:
    state = GatedFileServer(url="")
    handler = type("Handler", (_GatedHandler,), {"server_state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(lora_dir)))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        for gate in state.gates.values():
            gate.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
