"""SDXL at the paper's settings on one (or two) CUDA GPUs: diffusers against the runtime's path.

Builds the full SDXL-base architecture offline with random weights, initialised on the GPU
and saved in float16 (model_factory's "sdxl" size: UNet 2.6B parameters, three ControlNets
of 1.25B made from it, the SDXL VAE, CLIP-L and OpenCLIP-bigG text encoders), writes random
rank-64 LoRAs over the UNet's attention, feed-forward and projection layers, then times
1024x1024, 50 steps, CFG (guidance 5) for three workloads: 0 ControlNets / 0 LoRAs, 1 / 1
and 3 / 2, each with these set-ups:

  diffusers   StableDiffusionXLPipeline / StableDiffusionXLControlNetPipeline; a request with
              LoRAs does load_lora_weights + fuse_lora, the call, unfuse_lora +
              unload_lora_weights (what a diffusers server does per request)
  ours        the runtime's BaseEngine with BAL (K = a fifth of the steps: the paper's 10 of
              50) and the ControlNet service in a second process on the same GPU, over gRPC,
              in synchronous mode (diffusers' output)
  ours + LP   the same with latent parallelism (the CFG branches on cuda:0 and cuda:1); only
              with two or more GPUs, skipped (and said so) otherwise

Each set-up gets one identical warm-up call per workload; the timed calls are interleaved
(diffusers, ours, diffusers, ours, ...) with torch.cuda.synchronize() around each. Prints the
median and min-max seconds, the ratio diffusers / ours per workload, and the share of the
GPU's dense fp16 tensor peak the UNet reaches: the FLOPs of one forward (batch 2, 128x128
latent) counted with FlopCounterMode, over its measured time. Writes the results as JSON.

Usage (bench/gpu.sh runs this from the repository root: relative paths are relative to it):

  bench/gpu.sh                            # 3 timed repeats: 5-7 min on an H200 (estimated), build included
  bench/gpu.sh --repeats 5 --out out/gpu-h100.json
  bench/gpu.sh --peak-tflops 989          # a GPU the peak table does not know
  bench/gpu.sh --controlnet-device cuda:1 # the ControlNet service on a second GPU (the paper's set-up)
  bench/gpu.sh --dry-run                  # the same code on CPU: tiny models, 64 px, 2 steps, < 1 min

Needs roughly 40 GB of GPU memory (the base model twice, the three ControlNets twice: an
estimate) and 15 GB of disk for the model set, kept in .models/gpu-bench-sdxl for the next run.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import harness
import torch
from PIL import Image, ImageDraw

from swiftdiffusion.runtime.config import BaseSection, ControlNetEntry, ControlNetMode, ControlNetSection, RuntimeConfig
from swiftdiffusion.runtime.config import LoraEntry as LoraConfig
from swiftdiffusion.runtime.controlnet.control_image import encode_png
from swiftdiffusion.runtime.dev.ports import free_port
from swiftdiffusion.runtime.dev.local_stack import ServiceProcess, start_service
from swiftdiffusion.runtime.dev.model_factory import build_model_set
from swiftdiffusion.runtime.dev.synthetic_lora import write_random_lora
from swiftdiffusion.runtime.lora.service import bal_step_hooks
from swiftdiffusion.runtime.placement import DTYPES
from swiftdiffusion.runtime.pipeline.base_model import BaseModel
from swiftdiffusion.runtime.pipeline.engine import BaseEngine
from swiftdiffusion.runtime.pipeline.requests import GenerateParams
from swiftdiffusion.runtime.pipeline.step_hooks import LoraUse
from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics
from swiftdiffusion.runtime.serving.residual_sources import residual_source_for
from swiftdiffusion.runtime.transport.residual_source import ControlNetUse

ROOT = Path(__file__).resolve().parents[1]
CONTROLNETS = ("canny", "depth", "pose")
PROMPT = "a lighthouse on a cliff at dusk, volumetric light"
SEED = 7
GUIDANCE = 5.0
CONDITIONING_SCALE = 0.5
LORA_SCALE = 0.8
DIFFUSERS, OURS, OURS_LP = "diffusers", "ours", "ours + latent parallelism"
WALL = "wall"  # harness.Measurement key of the timed call
REPORTED_PHASES = ("text_encode", "denoise", "residual_wait", "vae_decode")  # where our time goes

# Dense (no sparsity) fp16/bf16 tensor-core TFLOPS. NVIDIA's data sheets quote the sparse
# figure, twice these: H100 SXM 1,979 (H200 and H800 SXM the same chip and clocks), H100 and
# H200 NVL 1,671, H100 and H800 PCIe 1,513, A100 624, L40S 733, A10 250, L4 242. First match wins.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"\bH[12]00 NVL\b", 835.0),
    (r"\bH[18]00 PCIe\b", 756.0),
    (r"\bH200\b", 989.0),
    (r"\bH100\b", 989.0),
    (r"\bH800\b", 989.0),
    (r"\bA100\b", 312.0),
    (r"\bL40S\b", 362.0),
    (r"\bA10\b", 125.0),
    (r"\bL4\b", 121.0),
)


@dataclass(frozen=True)
class Settings:
    """One run's shape: the full GPU run, or the dry run's tiny CPU stand-in."""

    size: str
    device: str
    dtype: str
    resolution: int
    steps: int
    repeats: int
    rank: int
    k: int
    unet_repeats: int
    threads: int | None
    mode: str
    controlnet_device: str
    latent_parallel: str
    models: Path
    out: Path
    peak_tflops: float | None

    @property
    def cuda(self) -> bool:
        return torch.device(self.device).type == "cuda"


@dataclass(frozen=True)
class Workload:
    controlnets: int
    loras: int

    @property
    def name(self) -> str:
        return f"{self.controlnets}C/{self.loras}L"


WORKLOADS = (Workload(0, 0), Workload(1, 1), Workload(3, 2))
SetUp = Callable[[Workload], dict[str, float]]  # runs one request; returns its phase timings, if any


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models, 64 px, 2 steps, 1 repeat, fp32")
    parser.add_argument("--repeats", type=int, help="timed calls per set-up and workload (default 3; dry run 1)")
    parser.add_argument("--steps", type=int, help="denoising steps (default 50; dry run 2)")
    parser.add_argument("--resolution", type=int, help="image width and height (default 1024; dry run 64)")
    parser.add_argument("--rank", type=int, help="LoRA rank (default 64; dry run 4)")
    parser.add_argument("--k", type=int, help="BAL bound K (default: a fifth of the steps, at least 1)")
    parser.add_argument("--controlnet-mode", choices=("synchronous", "pipelined"), default="synchronous")
    parser.add_argument("--controlnet-device", help="the ControlNet service's device (default: the base model's)")
    parser.add_argument("--latent-parallel", choices=("auto", "on", "off"), default="auto",
                        help="auto: with two or more CUDA GPUs; on: also on CPU (a functional check only)")
    parser.add_argument("--models", type=Path, help="model set folder (default .models/gpu-bench-<size>)")
    parser.add_argument("--out", type=Path, help="JSON results (default out/gpu-bench.json; dry run out/gpu-bench-dry-run.json)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense fp16/bf16 tensor peak, overriding the table")
    args = parser.parse_args(argv)
    dry = args.dry_run
    device = "cpu" if dry else "cuda"
    steps = args.steps or (2 if dry else 50)
    size = "tiny" if dry else "sdxl"
    return Settings(
        size=size,
        device=device,
        dtype="float32" if dry else "float16",
        resolution=args.resolution or (64 if dry else 1024),
        steps=steps,
        repeats=args.repeats or (1 if dry else 3),
        rank=args.rank or (4 if dry else 64),
        k=args.k if args.k is not None else max(1, steps // 5),
        unet_repeats=1 if dry else 10,
        threads=1 if dry else None,  # the dry run shares two cores with the ControlNet service
        mode=args.controlnet_mode,
        controlnet_device=args.controlnet_device or device,
        latent_parallel=args.latent_parallel,
        models=args.models or ROOT / ".models" / f"gpu-bench-{size}",
        out=args.out or ROOT / "out" / ("gpu-bench-dry-run.json" if dry else "gpu-bench.json"),
        peak_tflops=args.peak_tflops,
    )


def build(settings: Settings) -> list[Path]:
    """The model set (cached in settings.models) and the LoRAs every workload may use."""
    build_model_set(settings.models, settings.size, CONTROLNETS, device=settings.device, dtype=settings.dtype)
    return write_loras(settings.models, max(w.loras for w in WORKLOADS), settings.rank, settings.dtype)


def write_loras(root: Path, count: int, rank: int, dtype: str) -> list[Path]:
    """`<root>/loras/bench-r<rank>-<dtype>-<i>.safetensors`, written once, in the model's dtype
    as LoRAs ship. The factors are drawn on the CPU (write_random_lora's generator is there)."""
    paths = [root / "loras" / f"bench-r{rank}-{dtype}-{i}.safetensors" for i in range(count)]
    missing = [(seed, path) for seed, path in enumerate(paths) if not path.is_file()]
    if missing:
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(root / "base" / "unet", dtype=DTYPES[dtype], local_files_only=True)
        for seed, path in missing:
            partial = path.with_suffix(".partial")
            write_random_lora(partial, {"unet": unet}, rank=rank, seed=seed, dtype=DTYPES[dtype])
            partial.replace(path)
    return paths


def controlnet_entries(root: Path) -> list[ControlNetEntry]:
    return [ControlNetEntry(name=name, model=str(root / "controlnets" / name)) for name in CONTROLNETS]


def controlnet_config(settings: Settings) -> RuntimeConfig:
    """The ControlNet service's config.yaml, as the operator would render it for this model set."""
    return RuntimeConfig(
        role="controlnet",
        grpc_port=free_port(),
        metrics_port=free_port(),
        model_store=str(settings.models),
        controlnets=controlnet_entries(settings.models),
        controlnet=ControlNetSection(dtype=settings.dtype),
        device=settings.controlnet_device,
        torch_threads=settings.threads,
        bind_address="127.0.0.1",
    )


def base_config(settings: Settings, controlnet_target: str, loras: Sequence[Path]) -> RuntimeConfig:
    """The base server's config.yaml: our engine is wired from it exactly as serve-base wires it."""
    return RuntimeConfig(
        role="base",
        model_store=str(settings.models),
        controlnets=controlnet_entries(settings.models),
        device=settings.device,
        torch_threads=settings.threads,
        base=BaseSection(
            model=str(settings.models / "base"),
            dtype=settings.dtype,
            controlnet_service=controlnet_target,
            controlnet_mode=settings.mode,
            bal_default_k=settings.k,
            loras=[LoraConfig(name=path.stem, source=str(path), scale=LORA_SCALE) for path in loras],
            residual_wire_dtype=settings.dtype,  # lossless: the service computes in this dtype
        ),
    )


@contextmanager
def controlnet_service(settings: Settings, folder: Path) -> Iterator[ServiceProcess]:
    """The real ControlNet server in its own process; stopped (and its log shown on failure) after."""
    service = start_service("controlnet", controlnet_config(settings), folder)
    try:
        yield service
    except BaseException:
        print(f"ControlNet service log (tail):\n{service.log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        service.stop()


def control_images(resolution: int) -> list[Image.Image]:
    """One outline drawing per ControlNet, different enough that each one acts."""
    images = []
    for variant in range(len(CONTROLNETS)):
        image = Image.new("RGB", (resolution, resolution))
        inset = resolution // (4 + variant)
        ImageDraw.Draw(image).rectangle([inset, inset, resolution - inset, resolution - inset // 2], outline="white", width=2)
        images.append(image)
    return images


class Diffusers:
    """diffusers' pipelines over one loaded copy of the model set, as a diffusers server keeps them."""

    def __init__(self, settings: Settings, loras: Sequence[Path]) -> None:
        from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline, StableDiffusionXLPipeline

        dtype, root = DTYPES[settings.dtype], settings.models
        base = StableDiffusionXLPipeline.from_pretrained(
            root / "base", dtype=dtype, add_watermarker=False, local_files_only=True
        ).to(settings.device)
        nets = [
            ControlNetModel.from_pretrained(root / "controlnets" / name, dtype=dtype, local_files_only=True).to(settings.device)
            for name in CONTROLNETS
        ]
        self.pipelines = {0: base}
        for count in {w.controlnets for w in WORKLOADS} - {0}:
            self.pipelines[count] = StableDiffusionXLControlNetPipeline(
                **base.components, controlnet=nets[0] if count == 1 else nets[:count], add_watermarker=False
            )
        for pipeline in self.pipelines.values():
            pipeline.set_progress_bar_config(disable=True)
        self.settings, self.loras, self.images = settings, list(loras), control_images(settings.resolution)

    def __call__(self, workload: Workload) -> dict[str, float]:
        """One request: its LoRAs loaded and fused first, unfused and unloaded after."""
        pipeline = self.pipelines[workload.controlnets]
        names = [f"lora{i}" for i in range(workload.loras)]
        for name, path in zip(names, self.loras):
            pipeline.load_lora_weights(str(path), adapter_name=name)
        if names:
            pipeline.set_adapters(names, adapter_weights=[LORA_SCALE] * len(names))
            pipeline.fuse_lora(adapter_names=names)
        try:
            pipeline(**self._call_kwargs(workload))
        finally:
            if names:
                pipeline.unfuse_lora()
                pipeline.unload_lora_weights()
        return {}

    def _call_kwargs(self, workload: Workload) -> dict[str, Any]:
        s = self.settings
        kwargs: dict[str, Any] = dict(
            prompt=PROMPT, num_inference_steps=s.steps, guidance_scale=GUIDANCE, width=s.resolution,
            height=s.resolution, generator=torch.Generator().manual_seed(SEED), output_type="np",
        )
        count = workload.controlnets
        if count == 1:
            kwargs.update(image=self.images[0], controlnet_conditioning_scale=CONDITIONING_SCALE)
        elif count:
            kwargs.update(image=self.images[:count], controlnet_conditioning_scale=[CONDITIONING_SCALE] * count)
        return kwargs


class Ours:
    """The runtime's base engine, wired from a base config as serve-base wires it."""

    def __init__(self, settings: Settings, config: RuntimeConfig, model: BaseModel, stack: ExitStack) -> None:
        metrics = RuntimeMetrics("base")
        self.source = residual_source_for(config, model.device, model.dtype, metrics)
        stack.callback(self.source.close)
        self.hooks = bal_step_hooks(config, model, metrics.registry)
        stack.callback(self.hooks.close)
        self.mode = ControlNetMode(settings.mode)
        self.engine = BaseEngine(model, self.source, step_hooks=self.hooks, mode=self.mode, metrics=metrics)
        pngs = [encode_png(image) for image in control_images(settings.resolution)]
        self.uses = [ControlNetUse(name, png, CONDITIONING_SCALE) for name, png in zip(CONTROLNETS, pngs)]
        self.loras = [LoraUse(entry.name) for entry in config.require_base().loras]
        self.settings = settings

    def params(self, workload: Workload) -> GenerateParams:
        s = self.settings
        return GenerateParams(
            PROMPT, SEED, s.steps, GUIDANCE, s.resolution, s.resolution,
            controlnets=tuple(self.uses[: workload.controlnets]), loras=tuple(self.loras[: workload.loras]),
        )

    def __call__(self, workload: Workload) -> dict[str, float]:
        return self.engine.generate(self.params(workload)).timings

    def latent_parallel(self, config: RuntimeConfig, stack: ExitStack) -> SetUp:
        """The same engine's seams with the CFG branches split over two workers (serve-base's wiring,
        without pinning this process: on CPU it is a functional check, not a measurement)."""
        from swiftdiffusion.runtime.cfg.leader import LatentParallel
        from swiftdiffusion.runtime.cfg.serving import follower_spec

        model = self.engine.model
        parallel = LatentParallel(model.unet, follower_spec(config, model))
        stack.callback(parallel.close)
        parallel.start()
        engine = BaseEngine(
            model, parallel.residual_source(self.source), predictor=parallel.predictor,
            step_hooks=parallel.step_hooks(self.hooks, self.mode), mode=self.mode, metrics=self.engine.metrics,
        )
        return lambda workload: engine.generate(self.params(workload)).timings


def latent_parallel_reason(settings: Settings) -> str | None:
    """Why latent parallelism does not run here, or None when it does."""
    if settings.latent_parallel == "off":
        return "turned off (--latent-parallel off)"
    if not settings.cuda:
        on = settings.latent_parallel == "on"
        return None if on else "needs two CUDA GPUs, this run is on CPU (--latent-parallel on checks it there)"
    gpus = torch.cuda.device_count()
    return None if gpus >= 2 else f"needs two CUDA GPUs, this machine has {gpus}"


def synchronize(settings: Settings) -> None:
    if settings.cuda:
        torch.cuda.synchronize()


def timed(settings: Settings, run: Callable[[], object]) -> float:
    synchronize(settings)
    started = time.perf_counter()
    run()
    synchronize(settings)
    return time.perf_counter() - started


def measure(settings: Settings, setups: dict[str, SetUp]) -> dict[str, dict[str, Any]]:
    """Per workload and set-up: one warm-up call, then interleaved timed repeats (bench/harness.py)."""
    def call(workload: Workload, name: str) -> harness.Measurement:
        phases: dict[str, float] = {}
        seconds = timed(settings, lambda: phases.update(setups[name](workload)))
        return {WALL: seconds, **phases}

    runs = harness.interleave({f"{w.name}/{name}": (lambda w=w, name=name: call(w, name))
                               for w in WORKLOADS for name in setups}, settings.repeats)
    return {w.name: summarise(w, {name: runs[f"{w.name}/{name}"] for name in setups}) for w in WORKLOADS}


def summarise(workload: Workload, runs: dict[str, list[harness.Measurement]]) -> dict[str, Any]:
    setups = {}
    for name, calls in runs.items():
        wall = harness.spread(harness.column(calls))
        phase_names = sorted({p for call in calls for p in call if p != WALL})
        setups[name] = {
            "seconds": list(wall.samples), "median": wall.median, "min": wall.low, "max": wall.high,
            "phases_median": {p: statistics.median(call.get(p, 0.0) for call in calls) for p in phase_names},
        }
    ratios = {f"{DIFFUSERS}/{name}": setups[DIFFUSERS]["median"] / setups[name]["median"] for name in setups if name != DIFFUSERS}
    return {"controlnets": workload.controlnets, "loras": workload.loras, "setups": setups, "ratios": ratios}


def unet_throughput(settings: Settings, model: BaseModel) -> dict[str, Any]:
    """FLOPs of one UNet forward (CFG batch 2) and its median time: the share of peak it reaches."""
    from torch.utils.flop_counter import FlopCounterMode

    unet = model.unet
    text = model.encode_text(PROMPT, None, GUIDANCE, settings.resolution, settings.resolution)
    side = settings.resolution // model.pipeline.vae_scale_factor
    generator = torch.Generator().manual_seed(SEED)
    latent = torch.randn((2, unet.config.in_channels, side, side), generator=generator).to(model.device, model.dtype)
    timestep = torch.tensor(500.0, device=model.device)

    def forward() -> None:
        unet(latent, timestep, encoder_hidden_states=text.prompt_embeds, added_cond_kwargs=text.added_cond_kwargs,
             return_dict=False)

    counter = FlopCounterMode(display=False)
    with counter:
        forward()
    flops = counter.get_total_flops()
    for _ in range(3 if settings.cuda else 1):
        forward()
    seconds = statistics.median(timed(settings, forward) for _ in range(settings.unet_repeats))
    peak, source = peak_tflops(settings)
    achieved = flops / seconds / 1e12
    return {
        "latent": list(latent.shape),
        "flops": flops,
        "step_seconds": seconds,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "peak_source": source,
        "fraction_of_peak": None if peak is None else achieved / peak,
    }


def peak_tflops(settings: Settings) -> tuple[float | None, str]:
    if settings.peak_tflops is not None:
        return settings.peak_tflops, "--peak-tflops"
    if not settings.cuda:
        return None, "n/a on CPU"
    name = torch.cuda.get_device_name()
    for pattern, peak in PEAK_TFLOPS:
        if re.search(pattern, name):
            return peak, f"table: {name}"
    return None, f"unknown GPU {name!r}: pass --peak-tflops"


def quiet_libraries() -> None:
    """Loading bars and per-request LoRA notices (a LoRA without text-encoder parts, a second
    adapter on the UNet: both expected here) would bury the results."""
    import diffusers
    import transformers

    for logging in (diffusers.utils.logging, transformers.utils.logging):
        logging.set_verbosity_error()
        logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")


def environment(settings: Settings) -> dict[str, Any]:
    import diffusers

    gpus = torch.cuda.device_count()
    return {
        "device": torch.cuda.get_device_name() if settings.cuda else platform.processor() or platform.machine(),
        "cuda_devices": gpus,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
    }


def report(results: dict[str, Any]) -> None:
    print(f"\n{'workload':9s} {'set-up':26s} {'median':>9s} {'min-max':>15s}   diffusers / this")
    for name, workload in results["workloads"].items():
        for setup, stats in workload["setups"].items():
            ratio = workload["ratios"].get(f"{DIFFUSERS}/{setup}")
            spread = f"{stats['min']:.2f}-{stats['max']:.2f} s"
            print(f"{name:9s} {setup:26s} {stats['median']:7.2f} s {spread:>15s}   {'' if ratio is None else f'{ratio:.2f}x'}")
            phases = {p: stats["phases_median"][p] for p in REPORTED_PHASES if p in stats["phases_median"]}
            if phases:
                print(f"{'':12s}of which " + ", ".join(f"{p} {seconds:.2f} s" for p, seconds in phases.items()))
            name = ""
    unet = results["unet"]
    fraction = unet["fraction_of_peak"]
    share = "n/a" if fraction is None else f"{100 * fraction:.1f}% of {unet['peak_tflops']:.0f} TFLOPS"
    print(f"\nUNet forward, batch {unet['latent'][0]}, latent {unet['latent'][2]}x{unet['latent'][3]}: "
          f"{unet['flops'] / 1e9:.1f} GFLOP in {unet['step_seconds'] * 1e3:.1f} ms = {unet['achieved_tflops']:.1f} TFLOPS; "
          f"peak share {share} ({unet['peak_source']})")
    if results["latent_parallelism_skipped"]:
        print(f"latent parallelism skipped: {results['latent_parallelism_skipped']}")


def run(settings: Settings) -> dict[str, Any]:
    if settings.threads:
        torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    loras = build(settings)
    built = time.perf_counter() - started
    print(f"{settings.size} model set and {len(loras)} rank-{settings.rank} LoRA(s) ready in {built:.0f} s: {settings.models}")
    skipped = latent_parallel_reason(settings)
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu-bench-")))
        service = stack.enter_context(controlnet_service(settings, folder))
        config = base_config(settings, service.target, loras)
        model = BaseModel.load(settings.models / "base", dtype=settings.dtype, device=settings.device)
        ours = Ours(settings, config, model, stack)
        setups: dict[str, SetUp] = {DIFFUSERS: Diffusers(settings, loras), OURS: ours}
        if skipped is None:
            setups[OURS_LP] = ours.latent_parallel(config, stack)
        service.wait_healthy()
        loaded = time.perf_counter() - started - built
        print(f"models loaded and ControlNet service up in {loaded:.0f} s; {settings.resolution}x{settings.resolution}, "
              f"{settings.steps} steps, guidance {GUIDANCE}, {settings.dtype}, BAL K={settings.k}, "
              f"{settings.mode} ControlNet mode, {settings.repeats} timed repeat(s)", flush=True)
        workloads = measure(settings, setups)
        unet = unet_throughput(settings, model)
    return {
        "settings": {**asdict(settings), "models": str(settings.models), "out": str(settings.out), "guidance": GUIDANCE},
        "environment": environment(settings),
        "build_seconds": built,
        "load_seconds": loaded,
        "workloads": workloads,
        "latent_parallelism_skipped": skipped,
        "unet": unet,
        "total_seconds": time.perf_counter() - started,
    }


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    quiet_libraries()
    if settings.cuda and not torch.cuda.is_available():
        print("no CUDA GPU here: run with --dry-run for the CPU check", file=sys.stderr)
        return 2
    results = run(settings)
    report(results)
    settings.out.parent.mkdir(parents=True, exist_ok=True)
    settings.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {settings.out} ({results['total_seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
