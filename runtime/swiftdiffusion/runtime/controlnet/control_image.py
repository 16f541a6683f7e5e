"""Control images: decoded and checked once per request, preprocessed as diffusers does."""
from __future__ import annotations

import io

import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image, UnidentifiedImageError

from swiftdiffusion.runtime.errors import InvalidArgument

# StableDiffusionXLControlNetPipeline.control_image_processor, verbatim.
_PROCESSOR = VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True, do_normalize=False)


def decode_control_image(data: bytes, width: int, height: int, field: str) -> Image.Image:
    """Decode an encoded image and insist on the request's size (no silent resize)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise InvalidArgument(field, f"not a decodable image ({error})") from None
    if image.size != (width, height):
        raise InvalidArgument(field, f"image is {image.size[0]}x{image.size[1]}, request is {width}x{height}")
    return image


def preprocess_control_image(
    image: Image.Image, batch: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """The pipeline's `prepare_image`: to a [0, 1] tensor, repeated to the CFG batch."""
    tensor = _PROCESSOR.preprocess(image, height=image.height, width=image.width).to(dtype=torch.float32)
    # The pipeline's repeat_interleave leaves a contiguous NCHW copy; convolutions over a
    # channels-last view differ in the last bits, so match the layout, not just the values.
    tensor = tensor.contiguous().to(device=device, dtype=dtype)
    return torch.cat([tensor] * batch) if batch > 1 else tensor


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
