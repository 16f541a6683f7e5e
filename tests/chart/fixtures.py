"""pytest fixtures for the chart tests: the pinned helm from the test bed's build."""
from __future__ import annotations

import pytest

from tests.chart.helm import Helm
from tests.testbed import build


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(build.ensure_built() / "helm", tmp_path_factory.mktemp("helm-home"))
