"""Decoupled ControlNet vs diffusers, one CPU core per "device" (the paper compares GPUs so).

Set-ups, on the mid-size SDXL-architecture model set, for 1 and for 3 ControlNets:
  diffusers, 1 core     StableDiffusionXLControlNetPipeline pinned to core 0, one torch
                        thread: ControlNets run one after another with the UNet (the
                        one-GPU baseline);
  diffusers, 2 cores    the same pipeline pinned to both cores with two torch threads:
                        the strongest baseline for the same hardware;
  decoupled, every step the real base service on core 0 and ControlNet service on core 1
                        (gRPC over loopback, synchronous, exact mode), with the service's
                        engine swapped for one that embeds the control image at every
                        step as diffusers does: decoupling alone;
  decoupled, once       the same two services, unmodified: the control image is embedded
                        once per request (controlnet/forward.py);
  components, 1 core    per-step times on core 0 (batch 2, one forward each): the
                        ControlNet(s) as diffusers runs them (CN), the ControlNet(s) with
                        the embedding precomputed (CN'), the UNet's encoder + middle block
                        (E) and its decoder (D).

The two gains are reported apart, each beside its ideal per-step bound from the component
medians (text encoding and VAE decode, the same on both sides, dilute the end-to-end
ratios a little; the loop's own per-step time is printed against the ideal step too):
  (a) decoupling alone   diffusers 1 core / decoupled every step,  bound (CN + E + D) / (max(E, CN) + D)
  (b) embedding once     decoupled every step / decoupled once,    bound (max(E, CN) + D) / (max(E, CN') + D)
  (a) and (b)            diffusers 1 core / decoupled once,        bound (CN + E + D) / (max(E, CN') + D)
and diffusers on 2 cores over each decoupled set-up, with no bound (a different machine shape).

Method (bench/harness.py): every set-up's processes start together and stay alive; each
set-up gets one untimed warm-up request identical to the timed ones, then the rounds run
interleaved; medians with min-max spread, ratios of medians with the per-round range.

    .venv/bin/python bench/controlnet_bench.py                       # 256 px, 10 steps, 1 and 3 CNs
    .venv/bin/python bench/controlnet_bench.py --steps 30 --controlnets 1
    .venv/bin/python bench/controlnet_bench.py --steps 2 --controlnets 1 --repeats 1 --quick   # smoke
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import harness
import torch
from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline

from swiftdiffusion.runtime.client import generate, generate_request
from swiftdiffusion.runtime.config import Defaults, RuntimeConfig, dump_config, load_config
from swiftdiffusion.runtime.controlnet.control_image import (
    decode_control_image,
    encode_png,
    preprocess_control_image,
)
from swiftdiffusion.runtime.controlnet.engine import ControlNetEngine, PreparedControl
from swiftdiffusion.runtime.controlnet.forward import controlnet_residuals, embed_control_image
from swiftdiffusion.runtime.controlnet.residuals import Residuals
from swiftdiffusion.runtime.dev.local_stack import ServiceProcess, StackOptions, stack_configs, start_service
from swiftdiffusion.runtime.pipeline.base_model import BaseModel
from swiftdiffusion.runtime.pipeline.unet_split import unet_decode, unet_encode
from swiftdiffusion.runtime.transport.residual_source import ResidualRequest

SCRIPT = Path(__file__).resolve()
NAMES = harness.CONTROLNET_NAMES
PROMPT = "a house on a hill"
SCALE = 0.5
ONE_CORE, TWO_CORES = "diffusers, 1 core", "diffusers, 2 cores"
EVERY_STEP, ONCE = "decoupled 1+1, image embedded every step", "decoupled 1+1, image embedded once"
COMPONENTS = "components, 1 core"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--controlnets", type=int, nargs="+", default=[1, 3], choices=(1, 2, 3))
    harness.add_arguments(parser)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpus", type=str, default="0", help=argparse.SUPPRESS)
    parser.add_argument("--serve-controlnet", type=Path, metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_controlnet:
        return serve_controlnet_every_step(args.serve_controlnet)
    if args.worker:
        return diffusers_worker(args)
    harness.check_arguments(parser, args)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("needs at least two CPUs", file=sys.stderr)
        return 2
    models = harness.model_set("mid")
    start = harness.header(f"mid model set ({models}), {args.size}x{args.size}, {args.steps} steps, CFG (batch 2), "
                           f"fp32; {args.repeats} interleaved rounds after one warm-up each")
    results = {}
    for count in args.controlnets:
        runs = measure(args, models, count, cpus[:2])
        results[str(count)] = report(count, runs, args.steps)
    harness.write_json(args.json, "controlnet", {"size": args.size, "steps": args.steps, "repeats": args.repeats,
                                                 "controlnets": args.controlnets, "quick": args.quick}, start, results)
    return 0


def measure(args: argparse.Namespace, models: Path, count: int,
            cpus: list[int]) -> dict[str, list[harness.Measurement]]:
    """Starts every set-up's processes, then lets the harness warm and interleave them."""
    uses = [(NAMES[i], encode_png(control_image(args.size, i)), SCALE) for i in range(count)]
    request = generate_request(PROMPT, seed=1, controlnets=uses)
    specs = {name: diffusers_argv(args, count, cores) for name, cores in ((ONE_CORE, cpus[:1]), (TWO_CORES, cpus))}
    with tempfile.TemporaryDirectory() as folder, harness.workers(specs) as diffusers, ExitStack() as stack:
        every_step = stack.enter_context(decoupled(args, models, cpus, Path(folder) / "every-step", every_step=True))
        once = stack.enter_context(decoupled(args, models, cpus, Path(folder) / "once", every_step=False))
        setups = {
            ONE_CORE: lambda: diffusers[ONE_CORE].call(run="generate"),
            TWO_CORES: lambda: diffusers[TWO_CORES].call(run="generate"),
            EVERY_STEP: lambda: generate_once(every_step, request),
            ONCE: lambda: generate_once(once, request),
            COMPONENTS: lambda: diffusers[ONE_CORE].call(run="components"),
        }
        return harness.interleave(setups, args.repeats)


def report(count: int, runs: dict[str, list[harness.Measurement]], steps: int) -> dict[str, Any]:
    """Prints one ControlNet count's latencies, component times, gains and bounds; returns them for --json."""
    walls = {name: harness.spread(harness.column(runs[name])) for name in (ONE_CORE, TWO_CORES, EVERY_STEP, ONCE)}
    parts = {key: harness.spread(harness.column(runs[COMPONENTS], key)) for key in ("cn", "cn_once", "enc", "dec")}
    cn, cn_once, enc, dec = (parts[key].median for key in ("cn", "cn_once", "enc", "dec"))
    ideal = {EVERY_STEP: max(enc, cn) + dec, ONCE: max(enc, cn_once) + dec}
    bounds = {"decoupling": (cn + enc + dec) / ideal[EVERY_STEP], "embedding_once": ideal[EVERY_STEP] / ideal[ONCE],
              "both": (cn + enc + dec) / ideal[ONCE]}
    wall = {name: harness.column(runs[name]) for name in walls}
    ratios = {
        "decoupling": harness.ratio(wall[ONE_CORE], wall[EVERY_STEP]),
        "embedding_once": harness.ratio(wall[EVERY_STEP], wall[ONCE]),
        "both": harness.ratio(wall[ONE_CORE], wall[ONCE]),
        "two_cores_over_every_step": harness.ratio(wall[TWO_CORES], wall[EVERY_STEP]),
        "two_cores_over_once": harness.ratio(wall[TWO_CORES], wall[ONCE]),
    }
    loop = {name: harness.spread([run["denoise"] / steps for run in runs[name]]) for name in (EVERY_STEP, ONCE)}
    waits = {name: harness.spread(harness.column(runs[name], "residual_wait")) for name in (EVERY_STEP, ONCE)}

    print(f"\n{count} ControlNet{'s' if count > 1 else ''}: wall time per request")
    for name, value in walls.items():
        print(f"  {name:42s} {value.text()}")
    print("  per step on one core (batch 2): "
          f"CN (image embedded every step, as diffusers) {parts['cn'].text(digits=3)}; "
          f"CN' (embedded once) {parts['cn_once'].text(digits=3)}; "
          f"UNet encoder+mid E {parts['enc'].text(digits=3)}; decoder D {parts['dec'].text(digits=3)}")
    print("  gains, each beside its ideal per-step bound:")
    print(f"    (a) decoupling alone   diffusers 1 core / decoupled every step:  "
          f"{ratios['decoupling'].text(bounds['decoupling'])}")
    print(f"    (b) embedding once     decoupled every step / decoupled once:    "
          f"{ratios['embedding_once'].text(bounds['embedding_once'])}")
    print(f"    (a) and (b)            diffusers 1 core / decoupled once:        {ratios['both'].text(bounds['both'])}")
    print(f"    strongest baseline     diffusers 2 cores / decoupled every step: "
          f"{ratios['two_cores_over_every_step'].text()}")
    print(f"{'':27s}diffusers 2 cores / decoupled once:       {ratios['two_cores_over_once'].text()}")
    for name, formula in ((EVERY_STEP, "max(E, CN) + D"), (ONCE, "max(E, CN') + D")):
        print(f"  {name}: denoising loop {loop[name].text(unit='s/step', digits=3)} vs ideal {formula} "
              f"{ideal[name]:.3f} s/step ({100 * ideal[name] / loop[name].median:.0f}% of ideal); "
              f"residual wait {waits[name].text()} per request")
    setups: dict[str, Any] = {name: {"wall": value.as_json()} for name, value in walls.items()}
    for name in (EVERY_STEP, ONCE):
        setups[name] |= {"loop_per_step": loop[name].as_json(), "ideal_step": ideal[name],
                         "residual_wait": waits[name].as_json()}
    return {
        "setups": setups,
        "components_per_step": {key: value.as_json() for key, value in parts.items()},
        "ratios": {key: value.as_json(bounds.get(key)) for key, value in ratios.items()},
    }


def diffusers_argv(args: argparse.Namespace, count: int, cpus: list[int]) -> list[str]:
    return [sys.executable, str(SCRIPT), "--worker", "--cpus", ",".join(map(str, cpus)), "--size", str(args.size),
            "--steps", str(args.steps), "--controlnets", str(count)]


def generate_once(target: str, request: Any) -> harness.Measurement:
    """One Generate through the services, timed by the client; the server's phase timings ride along."""
    started = time.perf_counter()
    reply = generate(target, request)
    return {"wall": time.perf_counter() - started, **reply.timings}


@contextmanager
def decoupled(args: argparse.Namespace, models: Path, cpus: list[int], folder: Path, every_step: bool) -> Iterator[str]:
    """The base service pinned to the first core and a ControlNet service to the second; yields the base target."""
    options = StackOptions.on_free_ports(
        models, threads=1, base_cpus=cpus[:1], controlnet_cpus=cpus[1:2],
        defaults=Defaults(steps=args.steps, guidance_scale=5.0, width=args.size, height=args.size),
    )
    base_config, controlnet_config = stack_configs(options)
    with ExitStack() as stack:
        start = start_every_step_service if every_step else start_service
        controlnet = start("controlnet", controlnet_config, folder)
        stack.callback(controlnet.stop)
        base = start_service("base", base_config, folder)
        stack.callback(base.stop)
        controlnet.wait_healthy(600)
        base.wait_healthy(600)
        yield base.target


def start_every_step_service(role: str, config: RuntimeConfig, folder: Path) -> ServiceProcess:
    """`start_service`'s twin for this script's own ControlNet service (see serve_controlnet_every_step)."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / f"{role}.yaml"
    config_path.write_text(dump_config(config))
    log = folder / f"{role}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, str(SCRIPT), "--serve-controlnet", str(config_path)],
                                   stdout=out, stderr=subprocess.STDOUT)
    return ServiceProcess(role, f"127.0.0.1:{config.grpc_port}", process, log)


@dataclasses.dataclass(frozen=True)
class ImagesKept(PreparedControl):
    """A prepared request that also keeps its preprocessed control images."""

    images: tuple[torch.Tensor, ...] = ()


class EmbedEveryStep(ControlNetEngine):
    """diffusers' arrangement: each step embeds the control image again, then runs the same forward.

    Residuals are the same as the unmodified engine's (the same operations on the same
    inputs); only the per-step work differs, which is what gain (a) must leave out.
    """

    def prepare(self, request: ResidualRequest) -> ImagesKept:
        prepared = super().prepare(request)
        batch = prepared.text.prompt_embeds.shape[0]
        images = tuple(
            preprocess_control_image(decode_control_image(use.image, "image"), request.width, request.height,
                                     batch, self.device, self.dtype)
            for use in request.controlnets
        )
        return ImagesKept(**vars(prepared), images=images)

    def compute(self, prepared: ImagesKept, latent: torch.Tensor, timestep: torch.Tensor) -> Residuals:
        embeddings = tuple(embed_control_image(model, image)
                           for model, image in zip(prepared.models, prepared.images, strict=True))
        return super().compute(dataclasses.replace(prepared, embeddings=embeddings), latent, timestep)


def serve_controlnet_every_step(config_path: Path) -> int:
    """The real ControlNet service with its engine swapped for EmbedEveryStep (nothing else differs)."""
    from swiftdiffusion.runtime.serving import controlnet_server

    controlnet_server.ControlNetEngine = EmbedEveryStep  # type: ignore[misc]
    server = controlnet_server.start_controlnet_server(load_config(config_path))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


def control_image(size: int, variant: int):  # noqa: ANN201 (a PIL image)
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    inset = size // (4 + variant)
    draw.rectangle([inset, inset, size - inset, size - inset // 2], outline="white", width=2)
    return image


def diffusers_worker(args: argparse.Namespace) -> int:
    """A pinned process holding diffusers' pipeline: runs a request, or the component timings, on command."""
    cpus = [int(c) for c in args.cpus.split(",")]
    os.sched_setaffinity(0, set(cpus))
    torch.set_num_threads(len(cpus))
    models = harness.model_set("mid")
    count = args.controlnets[0]
    nets = [ControlNetModel.from_pretrained(models / "controlnets" / NAMES[i]) for i in range(count)]
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(
        models / "base", controlnet=nets if count > 1 else nets[0], local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    images = [control_image(args.size, i) for i in range(count)]
    call = dict(
        prompt=PROMPT, image=images if count > 1 else images[0], width=args.size, height=args.size,
        guidance_scale=5.0, controlnet_conditioning_scale=[SCALE] * count if count > 1 else SCALE, output_type="np",
    )
    components = Components(pipe, nets, images, args.size, args.steps)

    def handle(command: dict[str, Any]) -> harness.Measurement:
        if command["run"] == "components":
            return components.measure()
        generator = torch.Generator().manual_seed(1)
        return {"wall": harness.timed(lambda: pipe(**call, num_inference_steps=args.steps, generator=generator))}

    return harness.serve(handle)


class Components:
    """One denoising step's parts at batch 2, timed one forward each (the rounds give the median)."""

    def __init__(self, pipe: StableDiffusionXLControlNetPipeline, nets: list[ControlNetModel], images: list,
                 size: int, steps: int) -> None:
        model = BaseModel(pipe)
        self.unet, self.nets = model.unet, nets
        self.text = model.encode_text(PROMPT, None, 5.0, size, size)
        start = model.start(steps, size, size, 0, torch.float32)
        self.t = start.timesteps[min(3, steps - 1)]
        self.x = start.scheduler.scale_model_input(torch.cat([start.latents] * 2), self.t)
        self.conds = [preprocess_control_image(i, i.width, i.height, 2, torch.device("cpu"), torch.float32)
                      for i in images]
        self.embeddings = [embed_control_image(net, cond) for net, cond in zip(nets, self.conds, strict=True)]
        self.encoded = unet_encode(self.unet, self.x, self.t, self.text)

    @torch.no_grad()
    def measure(self) -> harness.Measurement:
        started = time.perf_counter()
        parts = {
            "cn": harness.timed(self._controlnets),
            "cn_once": harness.timed(self._controlnets_once),
            "enc": harness.timed(lambda: unet_encode(self.unet, self.x, self.t, self.text)),
            "dec": harness.timed(lambda: unet_decode(self.unet, self.encoded, None)),
        }
        return {"wall": time.perf_counter() - started, **parts}

    def _controlnets(self) -> None:
        """As diffusers runs them: ControlNetModel.forward, the image embedded inside."""
        for net, cond in zip(self.nets, self.conds, strict=True):
            net(self.x, self.t, encoder_hidden_states=self.text.prompt_embeds, controlnet_cond=cond,
                conditioning_scale=SCALE, added_cond_kwargs=self.text.added_cond_kwargs, return_dict=False)

    def _controlnets_once(self) -> None:
        for net, embedding in zip(self.nets, self.embeddings, strict=True):
            controlnet_residuals(net, self.x, self.t, self.text, embedding, SCALE)


if __name__ == "__main__":
    sys.exit(main())
