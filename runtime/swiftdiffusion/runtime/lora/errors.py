"""Why a LoRA was refused; each is a request error the servicer maps to a gRPC status."""
from __future__ import annotations

from swiftdiffusion.runtime.errors import RequestError


class LoraError(RequestError):
    """A LoRA could not be used for this request; the base weights are left as they were."""


class LoraNotFoundError(LoraError):
    """The name is not in the store, or its source does not exist (NOT_FOUND)."""


class LoraFormatError(LoraError):
    """The file is not a readable safetensors LoRA: corrupt, pickled, unknown keys (INVALID_ARGUMENT)."""


class LoraMismatchError(LoraError):
    """The LoRA's layers do not all match the base model's layers (INVALID_ARGUMENT)."""
