"""The live calibration's power tool (`power.py`) on the recorded runs' spread."""
from __future__ import annotations

from tests.fleet import calibration, power
from tests.fleet.models import OURS, WRONG_MODELS
from tests.fleet.recording import RECORDED, Recording


def test_one_fleet_draw_holds_our_model_more_often_than_one_20_percent_slow() -> None:
    recordings = [Recording.load(folder) for folder in RECORDED]
    spread = power.Spread.measured(recordings)
    counts = power.held(recordings[-1], calibration.SEGMENTS,
                        {"ours": OURS, "slower": WRONG_MODELS["service 20% slower"]}, spread, fleets=6, traces=1)
    assert counts["ours"] > counts["slower"], counts
