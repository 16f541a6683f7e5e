"""Fetch a LoRA file's bytes from a local path, a mounted volume or an HTTP(S) URL.

Only safetensors files are accepted: a pickled checkpoint (.bin, .pt, .ckpt) could run
code when loaded, so it is refused by name before a byte is read.
"""
from __future__ import annotations

import json
import struct
import threading
import urllib.error
import urllib.parse
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import BinaryIO

from swiftdiffusion.runtime.lora.errors import LoraError, LoraFormatError, LoraNotFoundError, LoraUnavailableError

_CHUNK = 1 << 20
_MAX_HEADER = 100 << 20  # safetensors' own limit
_PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def is_url(source: str) -> bool:
    return urllib.parse.urlsplit(source).scheme in ("http", "https")


def _check_suffix(source: str) -> None:
    path = urllib.parse.urlsplit(source).path if is_url(source) else source
    if path.lower().endswith(_PICKLED):
        raise LoraFormatError(f"{source}: pickled checkpoints are refused; convert the LoRA to .safetensors")
    if not path.lower().endswith(".safetensors"):
        raise LoraFormatError(f"{source}: a LoRA must be a .safetensors file")


def _open(source: str, timeout_s: float) -> BinaryIO:
    _check_suffix(source)
    if is_url(source):
        try:
            return urllib.request.urlopen(source, timeout=timeout_s)  # noqa: S310 (scheme checked)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise LoraNotFoundError(f"{source}: not found (HTTP 404)") from error
            raise LoraUnavailableError(f"{source}: HTTP {error.code}") from error
        except (urllib.error.URLError, OSError) as error:
            raise LoraUnavailableError(f"{source}: cannot fetch: {error}") from error
    path = Path(source.removeprefix("file://"))
    if not path.is_file():
        raise LoraNotFoundError(f"{source}: no such file")
    return path.open("rb")


def fetch(source: str, cancelled: threading.Event | None = None, timeout_s: float = 60.0) -> bytes:
    """The whole file; stops early (LoraError) once `cancelled` is set."""
    chunks: list[bytes] = []
    with closing(_open(source, timeout_s)) as stream:
        while chunk := stream.read(_CHUNK):
            if cancelled is not None and cancelled.is_set():
                raise LoraError(f"{source}: load cancelled")
            chunks.append(chunk)
    return b"".join(chunks)


def read_keys(source: str, timeout_s: float = 60.0) -> list[str]:
    """The tensor names in a safetensors file, from its header alone (a few KiB read)."""
    with closing(_open(source, timeout_s)) as stream:
        prefix = stream.read(8)
        try:
            (size,) = struct.unpack("<Q", prefix)
            if size > _MAX_HEADER:
                raise ValueError(f"header of {size} bytes")
            header = json.loads(stream.read(size))
        except (struct.error, ValueError) as error:
            raise LoraFormatError(f"{source}: not a safetensors file: {error}") from error
    return [key for key in header if key != "__metadata__"]
