"""`python -m tests.testbed.fleet <state dir>`: the fleet's kubelet and service proxy for
the test bed in that state dir, until SIGTERM (started by `TestBed.up` in fleet mode).
It first fills the fleet's model store (the tiny set under the examples' names)."""
from __future__ import annotations

import asyncio
import signal
import sys
import threading
from pathlib import Path

from tests.runtime.fixtures import cached_model_set
from tests.testbed.cluster import TestBed
from tests.testbed.fleet import model_store
from tests.testbed.fleet.kubelet import Kubelet
from tests.testbed.fleet.network import FleetNetwork
from tests.testbed.fleet.service_proxy import ServiceProxy
from tests.testbed.nodes import FLEET_POOLS


def main(state: Path) -> None:
    bed = TestBed(state)
    network = FleetNetwork(bed.marker()["fleet"]["network"])
    store = model_store.populate(bed.model_store, cached_model_set("tiny"), model_store.example_workflows())
    kubelet = Kubelet(bed.api(), network, state / "fleet", FLEET_POOLS, {model_store.IMAGE_MODEL_PATH: store})
    loop = asyncio.new_event_loop()
    proxy_stopping = asyncio.Event()

    def stop(*_: object) -> None:
        kubelet.stopping.set()
        loop.call_soon_threadsafe(proxy_stopping.set)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    proxy = threading.Thread(target=loop.run_until_complete, args=(ServiceProxy(bed.api()).run(proxy_stopping),),
                             name="service-proxy", daemon=True)
    proxy.start()
    kubelet.run()
    proxy.join(timeout=5)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
