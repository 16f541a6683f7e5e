"""The decoupled path, in one process, reproduces diffusers' SDXL (ControlNet) pipelines."""
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from swiftdiffusion.runtime.config import ControlNetMode
from swiftdiffusion.runtime.pipeline.engine import BaseEngine
from swiftdiffusion.runtime.transport.inprocess import InProcessResidualSource
from tests.runtime.helpers import diffusers_reference, params_with


@pytest.fixture
def engine(tiny_base_model, tiny_controlnet_engine) -> BaseEngine:
    return BaseEngine(tiny_base_model, InProcessResidualSource(tiny_controlnet_engine))


@pytest.mark.parametrize("controlnets", [0, 1, 2, 3])
def test_synchronous_latents_match_diffusers_for_each_controlnet_count(
    engine: BaseEngine, tiny_model_set: Path, controlnets: int
) -> None:
    params = params_with(controlnets)
    ours = engine.generate(params, decode=False).latents.numpy()
    reference = diffusers_reference(tiny_model_set, params)
    np.testing.assert_array_equal(ours, reference)


def test_decoded_image_matches_diffusers_with_two_controlnets(engine: BaseEngine, tiny_model_set: Path) -> None:
    params = params_with(2, size=128, steps=2)
    ours = engine.generate(params).image
    reference = diffusers_reference(tiny_model_set, params, output_type="np")[0]
    assert ours.shape == reference.shape == (128, 128, 3)
    np.testing.assert_array_equal(ours, reference)


@pytest.mark.parametrize("control_size", [128, 40])
def test_control_image_of_another_size_is_resized_as_diffusers_does(
    engine: BaseEngine, tiny_model_set: Path, control_size: int
) -> None:
    params = params_with(2, control_size=control_size)
    ours = engine.generate(params, decode=False).latents.numpy()
    np.testing.assert_array_equal(ours, diffusers_reference(tiny_model_set, params))
    same_size = engine.generate(params_with(2), decode=False).latents.numpy()
    assert np.abs(ours - same_size).max() > 1e-4, "the resized image must be what conditions the result"


def test_controlnets_change_the_result(engine: BaseEngine) -> None:
    without = engine.generate(params_with(0), decode=False).latents
    with_one = engine.generate(params_with(1), decode=False).latents
    assert (without - with_one).abs().max() > 1e-3


def test_pipelined_mode_deviates_only_slightly(tiny_base_model, tiny_controlnet_engine) -> None:
    source = InProcessResidualSource(tiny_controlnet_engine)
    exact = BaseEngine(tiny_base_model, source).generate(params_with(1, steps=4), decode=False).latents
    pipelined = BaseEngine(tiny_base_model, source, mode=ControlNetMode.PIPELINED)
    approx = pipelined.generate(params_with(1, steps=4), decode=False).latents
    assert 0 < (exact - approx).abs().max() < 0.1 * exact.abs().max()


def test_the_warm_up_counts_nothing_and_changes_no_later_output(engine: BaseEngine, tiny_model_set: Path) -> None:
    """The base server warms up before it reports SERVING: no request in its metrics, and the
    requests after it still reproduce diffusers."""
    before = generate_latest(engine.metrics.registry)
    engine.warm_up(guidance_scale=5.0)
    assert generate_latest(engine.metrics.registry) == before
    params = params_with(1)
    np.testing.assert_array_equal(engine.generate(params, decode=False).latents.numpy(),
                                  diffusers_reference(tiny_model_set, params))
