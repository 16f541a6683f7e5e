"""How `make test` spreads the suite over pytest-xdist workers on two cores (three by default).

Tests are scheduled in groups, one group to one worker at a time: the fleet (its test bed
runs pods as runtime processes and owns the cluster DNS address: one per machine), the
folders that share the session's test bed (started once per worker that needs it), the
runtime image's podman containers, and the torch-heavy folders in two halves. Anything else
is light and goes wherever a worker is free. Groups are sent longest first (measured: fleet
about 370 s, test bed 385, podman 40-130, each torch half 70-90), so the fleet and the test
bed run side by side and the short groups fill in behind them. The fleet and the test bed
groups spend much of their time waiting on control loops, and two workers left 17% of the
two cores idle (14.1 CPU-minutes in 8 min 27 s); three took 7 min 25 s. The extra contention
exposed timing races, fixed at their causes (docs/testbed.md).
"""
from __future__ import annotations

from typing import Any

import pytest

GROUPS = {
    "fleet": "fleet",
    **dict.fromkeys(("reconcile", "chart", "gitops", "monitoring", "cluster", "testbed",
                     "images/test_operator_image.py"), "testbed"),
    "images": "podman",
    **dict.fromkeys(("runtime", "lora"), "torch"),
    **dict.fromkeys(("cfg", "bench"), "torch-cfg"),
}
ORDER = ("fleet", "testbed", "podman", "torch", "torch-cfg")


def group_of(nodeid: str) -> str:
    """The group of a test (`tests/<folder>/<file>::name`: its file's, else its folder's), or
    its own file when it has none."""
    path = nodeid.split("::", 1)[0]
    parts = path.split("/")
    if len(parts) <= 2:
        return path
    return GROUPS.get("/".join(parts[1:3]), GROUPS.get(parts[1], path))


def _rank(item: pytest.Item) -> int:
    group = group_of(item.nodeid)
    return ORDER.index(group) if group in ORDER else len(ORDER)


@pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture, which this keeps within a group
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    config.option.loadscopereorder = False  # keep the order above, not xdist's by test count
    return ByGroup(config, log)
