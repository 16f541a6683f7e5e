"""Generate the runtime's gRPC code from its checked-in .proto files (run by `make protos`).

Output (`*_pb2.py`, `*_pb2_grpc.py`, `*_pb2.pyi`) lands beside the .proto files and is
gitignored; imports are package-qualified (swiftdiffusion.runtime.serving.proto...) because the
include root is the runtime/ folder.
"""
from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1] / "runtime"
PROTO_DIR = ROOT / "swiftdiffusion" / "runtime" / "serving" / "proto"


def main() -> int:
    protos = sorted(p.relative_to(ROOT).as_posix() for p in PROTO_DIR.glob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{well_known}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        *protos,
    ]
    code = protoc.main(args)
    if code == 0:
        print(f"generated gRPC code for {', '.join(protos)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
