"""The generated gRPC modules, imported in one place with a clear message when missing."""
from __future__ import annotations

try:
    from swiftdiffusion.runtime.serving.proto import base_pb2, base_pb2_grpc, controlnet_pb2, controlnet_pb2_grpc
except ImportError as error:  # pragma: no cover - depends on the build step
    raise ImportError(
        "swiftdiffusion's gRPC code is not generated: run `make protos` "
        "(scripts/gen_protos.py) in the repository root"
    ) from error

__all__ = ["base_pb2", "base_pb2_grpc", "controlnet_pb2", "controlnet_pb2_grpc"]
