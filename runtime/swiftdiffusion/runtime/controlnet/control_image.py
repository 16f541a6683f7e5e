"""Control images: decoded and checked once per request, preprocessed as diffusers does.

A control image of another size than the request's is resized to it exactly as
`StableDiffusionXLControlNetPipeline` resizes it (its control image processor, PIL
Lanczos), so a client may send the image it has.
"""
from __future__ import annotations

import io

import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image, UnidentifiedImageError

from swiftdiffusion.runtime.errors import InvalidArgument

# StableDiffusionXLControlNetPipeline.control_image_processor, verbatim.
_PROCESSOR = VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True, do_normalize=False)


def decode_control_image(data: bytes, field: str) -> Image.Image:
    """Decode an encoded image (PNG, JPEG, WebP, ...); `field` names it in the error."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise InvalidArgument(field, "not an image in a format the service reads (PNG, JPEG, WebP, ...)") from None
    except Image.DecompressionBombError:
        raise InvalidArgument(field, f"larger than {Image.MAX_IMAGE_PIXELS * 2} pixels") from None
    except (OSError, ValueError, SyntaxError):
        raise InvalidArgument(field, "a damaged or truncated image") from None
    return image


def preprocess_control_image(
    image: Image.Image, width: int, height: int, batch: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """The pipeline's `prepare_image`: resized to the request's size, a [0, 1] tensor,
    repeated to the CFG batch."""
    tensor = _PROCESSOR.preprocess(image, height=height, width=width).to(dtype=torch.float32)
    # The pipeline's repeat_interleave leaves a contiguous NCHW copy; convolutions over a
    # channels-last view differ in the last bits, so match the layout, not just the values.
    tensor = tensor.contiguous().to(device=device, dtype=dtype)
    return torch.cat([tensor] * batch) if batch > 1 else tensor


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
