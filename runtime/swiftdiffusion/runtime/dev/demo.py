"""`make demo`: build the small model set offline, start both services, generate one image.

Works on a fresh machine with no GPU and no internet: the SDXL-architecture model set is
built from configs with fixed seeds (random weights, so the picture is abstract), the
ControlNet and base services run as local subprocesses exactly as the pods run them, and
one request with a ControlNet goes through the decoupled path.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from swiftdiffusion.runtime.client import generate, generate_request
from swiftdiffusion.runtime.config import Defaults, LoraEntry
from swiftdiffusion.runtime.controlnet.control_image import encode_png
from swiftdiffusion.runtime.dev.local_stack import StackOptions, local_stack
from swiftdiffusion.runtime.dev.model_factory import build_model_set
from swiftdiffusion.runtime.dev.synthetic_lora import lora_for_model_set

MODELS = Path(".models/tiny")
OUT = Path("out/demo.png")
SIZE = 256


def demo_control_image(size: int = SIZE) -> Image.Image:
    """A canny-style edge map: white outlines on black."""
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    draw.rectangle([size // 8, size // 2, size - size // 8, size - size // 10], outline="white", width=2)
    draw.polygon([(size // 8, size // 2), (size // 2, size // 6), (size - size // 8, size // 2)], outline="white", width=2)
    draw.ellipse([size // 2 - 20, size // 2 + 30, size // 2 + 20, size // 2 + 70], outline="white", width=2)
    return image


def demo_loras(models: Path) -> list[LoraEntry]:
    """LoRAs the demo applies (built offline into the model set)."""
    return [LoraEntry(name="demo-style", source=str(lora_for_model_set(models, "demo-style")), scale=0.8, k=5)]


def main() -> int:
    started = time.perf_counter()
    models = build_model_set(MODELS.resolve(), "tiny")
    print(f"model set: {models} (built offline, fixed seeds)")
    loras = demo_loras(models)
    options = StackOptions.on_free_ports(
        models,
        defaults=Defaults(steps=20, guidance_scale=5.0, width=SIZE, height=SIZE),
        loras=loras,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    control = demo_control_image()
    control.save(OUT.with_name("demo-control.png"))
    with tempfile.TemporaryDirectory(prefix="swiftdiffusion-demo-") as folder:
        print("starting the ControlNet and base services ...")
        with local_stack(options, Path(folder)) as stack:
            print(f"  base {stack.base.target}, ControlNet {stack.controlnet.target}")
            request = generate_request(
                "a small house on a hill, watercolor",
                seed=42,
                controlnets=[("canny", encode_png(control), 0.8)],
                loras=[(lora.name, lora.scale) for lora in loras],
            )
            reply = generate(stack.base.target, request, timeout=600)
    OUT.write_bytes(reply.png)
    print(f"wrote {OUT.resolve()} ({reply.width}x{reply.height}, control image {OUT.with_name('demo-control.png')})")
    print(f"  ControlNet canny @ 0.8, LoRA {', '.join(f'{lora.name} @ {lora.scale} (K={lora.k})' for lora in loras) or 'none'}")
    for phase, seconds in reply.timings.items():
        print(f"  {phase:16s} {seconds:7.3f} s")
    print(f"demo finished in {time.perf_counter() - started:.1f} s; services stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
