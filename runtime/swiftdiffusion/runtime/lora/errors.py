"""Why a LoRA was refused. Each is also the runtime's NotFound or InvalidArgument, so the
servicer answers NOT_FOUND, INVALID_ARGUMENT or UNAVAILABLE with the message below."""
from __future__ import annotations

from swiftdiffusion.runtime.errors import InvalidArgument, NotFound, RequestError, Unavailable


class LoraError(RequestError):
    """A LoRA could not be used for this request; the base weights are left as they were."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)


class LoraNotFoundError(LoraError, NotFound):
    """The name is not in the store, or its source does not exist."""

    kind = "LoRA"


class LoraFormatError(LoraError, InvalidArgument):
    """The file is not a readable safetensors LoRA: corrupt, pickled, unknown keys."""

    field = "loras"


class LoraMismatchError(LoraError, InvalidArgument):
    """The LoRA's layers do not all match the base model's layers."""

    field = "loras"


class LoraUnavailableError(LoraError, Unavailable):
    """The LoRA's storage could not be reached or failed to serve it."""
