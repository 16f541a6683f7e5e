"""Profiled BAL bounds K, kept in a JSON sidecar next to the LoRA file.

`<lora>.safetensors.profile.json` holds one entry per (base model, revision, steps):
the first step at which the latent with the LoRA and the latent without it fall below
the similarity threshold, and the whole similarity curve for the operator to inspect.
The store reads it from the same place it reads the LoRA (path or URL).
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from swiftdiffusion.runtime.lora.source import is_url

SUFFIX = ".profile.json"


@dataclass(frozen=True)
class KProfile:
    base_model: str
    revision: str
    steps: int
    k: int
    threshold: float
    similarity: tuple[float, ...]

    def k_for(self, steps: int) -> int:
        """K for a request with a different step count: the same fraction of the schedule."""
        return self.k if steps == self.steps else round(self.k * steps / self.steps)


def first_step_below(similarity: list[float], threshold: float) -> int:
    """K: the first step whose latent similarity is below `threshold` (all steps if none is)."""
    return next((step for step, value in enumerate(similarity) if value < threshold), len(similarity))


def sidecar_for(source: str) -> str:
    return source + SUFFIX


def read_profiles(source: str, timeout_s: float = 10.0) -> list[KProfile]:
    """Every profile stored for the LoRA at `source`; none if there is no sidecar."""
    sidecar = sidecar_for(source)
    try:
        if is_url(sidecar):
            with urllib.request.urlopen(sidecar, timeout=timeout_s) as response:  # noqa: S310
                text = response.read().decode()
        else:
            text = Path(sidecar.removeprefix("file://")).read_text()
        entries = json.loads(text).get("profiles", [])
        return [KProfile(**{**entry, "similarity": tuple(entry["similarity"])}) for entry in entries]
    except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError, AttributeError):
        return []  # no sidecar, or one this version cannot read: K falls back to the default


def find_profile(candidates: Iterable[KProfile], base_model: str, revision: str, steps: int) -> KProfile | None:
    """The profile for this base model, preferring one made with the request's step count."""
    matching = [p for p in candidates if (p.base_model, p.revision) == (base_model, revision)]
    return min(matching, key=lambda p: abs(p.steps - steps), default=None)


def write_profile(path: Path, profile: KProfile) -> Path:
    """Add or replace this (base model, revision, steps) entry in the sidecar at `path`."""
    existing = json.loads(path.read_text()).get("profiles", []) if path.is_file() else []
    key = (profile.base_model, profile.revision, profile.steps)
    kept = [e for e in existing if (e["base_model"], e["revision"], e["steps"]) != key]
    path.write_text(json.dumps({"profiles": [*kept, asdict(profile)]}, indent=2) + "\n")
    return path
