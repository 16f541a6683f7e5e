"""Where and in what precision models run (dtype names, the device choice), apart from the
pipelines: the ControlNet server needs them without diffusers' SDXL pipeline and
transformers (0.7 s less CPU at each start)."""
from __future__ import annotations

import torch

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
