"""`swiftdiffusion`: run the services (as pods do, or both locally) and call them."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from swiftdiffusion.planner import cli as planner
from swiftdiffusion.runtime.dev import service_profile
from swiftdiffusion.runtime.lora.profile import add_arguments as add_profile_arguments
from swiftdiffusion.runtime.lora.profile import run as run_profile

DEFAULT_MODELS = Path(".models")
# How often the main thread wakes while it waits for SIGTERM or SIGINT. The kernel hands a
# signal sent to the process to any of its threads; CPython runs the handler only when the
# main thread next runs bytecode, so a main thread blocked in `Event.wait()` without a
# timeout never saw a SIGTERM that landed on one of gRPC's or torch's threads, and the pod
# did not drain before its SIGKILL.
SIGNAL_POLL_SECONDS = 0.5


def stop_signals() -> threading.Event:
    """An event that SIGTERM and SIGINT set."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def wait_for(stop: threading.Event) -> None:
    """Returns once `stop` is set, whichever thread the kernel gave the signal to."""
    while not stop.wait(SIGNAL_POLL_SECONDS):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="swiftdiffusion", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for role in ("base", "controlnet"):
        serve = commands.add_parser(f"serve-{role}", help=f"run the {role} service from a config file")
        serve.add_argument("--config", type=Path, required=True)
    local = commands.add_parser("serve", help="run both services locally on an offline-built model set")
    local.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="model set folder (built if missing)")
    local.add_argument("--size", choices=("tiny", "mid"), default="tiny")
    local.add_argument("--port", type=int, default=50051)
    local.add_argument("--controlnet-port", type=int, default=50052)
    local.add_argument("--mode", choices=("synchronous", "pipelined"), default="synchronous")
    gen = commands.add_parser("generate", help="ask a base service for an image and write it as PNG")
    gen.add_argument("prompt")
    gen.add_argument("--target", default="127.0.0.1:50051")
    gen.add_argument("--out", type=Path, default=Path("out/image.png"))
    gen.add_argument("--negative-prompt", default="")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--steps", type=int)
    gen.add_argument("--guidance-scale", type=float)
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--controlnet", action="append", default=[], metavar="NAME=IMAGE[@SCALE]")
    gen.add_argument("--lora", action="append", default=[], metavar="NAME[@SCALE]")
    gen.add_argument("--timeout", type=float, default=600.0)
    service_profile.add_arguments(commands.add_parser(
        "profile", help="measure the planner's service-time profile on the real runtime (this machine)"))
    profile = commands.add_parser("profile-lora", help="profile BAL's bound K for a (base model, LoRA) pair")
    add_profile_arguments(profile)
    build = commands.add_parser("build-models", help="build an SDXL-architecture model set offline")
    build.add_argument("folder", type=Path)
    build.add_argument("--size", choices=("tiny", "mid"), default="tiny")
    planner.add_trace_arguments(commands.add_parser("trace", help="generate a request trace from published statistics"))
    planner.add_simulate_arguments(commands.add_parser("simulate", help="replay a trace through a model of the fleet"))
    args = parser.parse_args(argv)
    return {
        "serve-base": _serve_pod,
        "serve-controlnet": _serve_pod,
        "serve": _serve_local,
        "generate": _generate,
        "build-models": _build,
        "profile-lora": run_profile,
        "profile": service_profile.run,
        "trace": planner.run_trace,
        "simulate": planner.run_simulate,
    }[args.command](args)


def _serve_pod(args: argparse.Namespace) -> int:
    from swiftdiffusion.runtime.config import BIND_ADDRESS_ENV, ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    if os.environ.get(BIND_ADDRESS_ENV):
        config = config.model_copy(update={"bind_address": os.environ[BIND_ADDRESS_ENV]})
    role = args.command.removeprefix("serve-")
    if config.role != role:
        print(f"config {args.config} is for role {config.role!r}, not {role!r}", file=sys.stderr)
        return 2
    if not config.model_downloads:  # before huggingface_hub is imported: it reads this once
        os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in this process may reach the hub
    from swiftdiffusion.runtime.serving.model_store import ModelStoreError, prepare_models

    try:
        prepare_models(config)
    except ModelStoreError as error:
        print(error, file=sys.stderr)
        return 1
    if role == "base":
        from swiftdiffusion.runtime.serving.base_server import start_base_server as start
    else:
        from swiftdiffusion.runtime.serving.controlnet_server import start_controlnet_server as start
    stop = stop_signals()
    running = start(config)
    print(f"{role} service on :{running.port}, metrics on :{running.metrics_port}", flush=True)
    wait_for(stop)
    print(f"{role} service draining: in-flight requests get {config.shutdown_grace_seconds:.0f} s", flush=True)
    running.stop(grace=config.shutdown_grace_seconds)
    return 0


def _serve_local(args: argparse.Namespace) -> int:
    from swiftdiffusion.runtime.dev.local_stack import StackOptions, local_stack
    from swiftdiffusion.runtime.dev.model_factory import build_model_set

    models = build_model_set(args.models, args.size)
    stop = stop_signals()
    options = StackOptions(models, base_port=args.port, controlnet_port=args.controlnet_port, mode=args.mode)
    with tempfile.TemporaryDirectory(prefix="swiftdiffusion-") as folder, local_stack(options, Path(folder)):
        print(f"serving: base 127.0.0.1:{args.port}, ControlNet 127.0.0.1:{args.controlnet_port} (Ctrl-C stops)", flush=True)
        wait_for(stop)
    return 0


def _generate(args: argparse.Namespace) -> int:
    import grpc

    from swiftdiffusion.runtime.client import generate, generate_request

    controlnets = []
    for spec in args.controlnet:
        name, _, rest = spec.partition("=")
        path, _, scale = rest.partition("@")
        controlnets.append((name, Path(path).read_bytes(), float(scale) if scale else None))
    loras = [(n, float(s) if s else None) for n, _, s in (spec.partition("@") for spec in args.lora)]
    request = generate_request(
        args.prompt, negative_prompt=args.negative_prompt, seed=args.seed, steps=args.steps,
        guidance_scale=args.guidance_scale, width=args.width, height=args.height,
        controlnets=controlnets, loras=loras,
    )
    try:
        reply = generate(args.target, request, timeout=args.timeout)
    except grpc.RpcError as error:
        print(f"generate failed: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(reply.png)
    print(f"wrote {args.out} ({reply.width}x{reply.height})")
    for phase, seconds in reply.timings.items():
        print(f"  {phase:16s} {seconds:8.3f} s")
    return 0


def _build(args: argparse.Namespace) -> int:
    from swiftdiffusion.runtime.dev.model_factory import build_model_set

    print(build_model_set(args.folder, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
