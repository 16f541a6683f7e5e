"""Leader side of a worker pair: starts the follower process, runs requests through it,
and owns the pair's health.

A replica is healthy only while its follower is alive and connected. When the follower
dies the running request fails with WorkerLost (the leader never finishes a step with
one branch), the pair reports unhealthy, and a background thread starts a new follower;
the pair reports healthy again once that follower is ready.
"""
from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from typing import Any

import torch

from swiftdiffusion.runtime.cfg.exchange import BranchExchange, StepCommand, WorkerLost
from swiftdiffusion.runtime.cfg.worker import BranchRequest, WorkerSpec, follower_main
from swiftdiffusion.runtime.errors import Unavailable

log = logging.getLogger(__name__)


class BranchFailed(Unavailable):
    """The follower's branch raised (e.g. its ControlNet residuals failed); the pair is fine."""


class PairSession:
    """One request on the pair: dispatch a step, compute the local branch, collect the other."""

    def __init__(self, exchange: BranchExchange) -> None:
        self._exchange = exchange
        self._outstanding = False
        self._failed = False

    def dispatch(self, index: int, timestep: torch.Tensor, latent: torch.Tensor, merges: int = 0) -> None:
        self._exchange.send_step(StepCommand(index, timestep, latent, merges))
        self._outstanding = True

    def collect(self) -> torch.Tensor:
        reply = self._exchange.recv_reply()
        self._outstanding = False
        if reply.prediction is None:
            self._failed = True
            raise BranchFailed("the follower's branch failed")
        return reply.prediction

    def finish(self) -> None:
        """End the request on the follower: drain an unanswered step, then say END."""
        if self._outstanding:
            self._failed = not self._exchange.recv_reply().ok
            self._outstanding = False
        if not self._failed:
            self._exchange.send_step(StepCommand(-1))


class WorkerPair:
    """The leader's handle on its follower; `on_health(serving)` mirrors the pair's health."""

    def __init__(
        self,
        spec: WorkerSpec,
        on_health: Callable[[bool], None] = lambda serving: None,
        start_timeout_s: float = 600.0,
        restart_delay_s: float = 1.0,
    ) -> None:
        self.spec = spec
        self._on_health = on_health
        self._start_timeout_s = start_timeout_s
        self._restart_delay_s = restart_delay_s
        self._lock = threading.Lock()  # one request at a time; restart holds it too
        self._healthy = threading.Event()
        self._closed = False
        self._process: multiprocessing.process.BaseProcess | None = None
        self._control: Connection | None = None
        self._exchange: BranchExchange | None = None

    @property
    def healthy(self) -> bool:
        return self._healthy.is_set()

    @property
    def follower_pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        with self._lock:
            self._spawn()
        self._set_health(True)

    def wait_healthy(self, timeout_s: float) -> bool:
        return self._healthy.wait(timeout_s)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            self._set_health(False)
            self._teardown(graceful=True)

    @contextmanager
    def session(self, request: BranchRequest) -> Iterator[PairSession]:
        """Run one request; any loss of the follower fails it and triggers recovery."""
        with self._lock:
            if not self.healthy or self._control is None or self._exchange is None:
                raise WorkerLost("latent-parallel replica is recovering its second worker")
            try:
                self._control.send(request)
                self._exchange.prepare(request.layout)
                session = PairSession(self._exchange)
                try:
                    yield session
                finally:
                    session.finish()
                    _, failure = self._recv_control()
                    if failure is not None:  # replaces the reply's bare "failed" with the reason
                        raise BranchFailed(f"the follower's branch failed: {failure}")
            except (WorkerLost, OSError, EOFError) as error:
                self._lost(error)
                if isinstance(error, WorkerLost):
                    raise
                raise WorkerLost(f"follower worker gone: {error!r}") from error

    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")
        control, child_control = context.Pipe()
        endpoint: Any
        if self.spec.exchange == "pipe":
            data, endpoint = context.Pipe()
        else:
            from swiftdiffusion.runtime.cfg.dist_exchange import leader_store

            store = leader_store()
            endpoint = ("127.0.0.1", store.port)
        process = context.Process(
            target=follower_main, args=(self.spec, child_control, endpoint), name="swd-cfg-follower", daemon=True
        )
        process.start()
        child_control.close()
        self._process, self._control = process, control
        status, _ = self._recv_control(self._start_timeout_s)
        if status != "ready":
            raise WorkerLost(f"follower did not start: {status}")
        self._exchange = self._open_exchange(data if self.spec.exchange == "pipe" else store, endpoint)
        threading.Thread(target=self._watch, args=(process,), name="swd-cfg-watch", daemon=True).start()

    def _watch(self, process: multiprocessing.process.BaseProcess) -> None:
        """Notice a follower that dies between requests (a request in flight notices by itself)."""
        wait([process.sentinel])
        with self._lock:
            if self._process is process and not self._closed:
                self._lost(WorkerLost(f"follower worker exited with code {process.exitcode}"))

    def _open_exchange(self, channel: Any, endpoint: Any) -> BranchExchange:
        alive = self._follower_alive
        device = self._leader_device()
        if self.spec.exchange == "pipe":
            from swiftdiffusion.runtime.cfg.pipe_exchange import PipeExchange

            endpoint.close()  # the follower holds its end; ours must close so its death reads as EOF
            return PipeExchange(channel, device, alive)
        from swiftdiffusion.runtime.cfg.dist_exchange import LEADER, TorchDistributedExchange

        return TorchDistributedExchange(channel, LEADER, device, alive)

    def _leader_device(self) -> torch.device:
        device = torch.device(self.spec.device)
        return torch.device("cuda", 0) if device.type == "cuda" else device

    def _follower_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def _recv_control(self, timeout_s: float | None = None) -> tuple[str, Any]:
        assert self._control is not None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._control.poll(0.2):
            if not self._follower_alive():
                raise WorkerLost("follower worker died")
            if deadline is not None and time.monotonic() > deadline:
                raise WorkerLost("follower worker did not answer in time")
        try:
            return self._control.recv()
        except (EOFError, OSError) as error:
            raise WorkerLost(f"follower worker closed its control connection: {error!r}") from error

    def _lost(self, error: BaseException) -> None:
        log.error("latent-parallel follower lost: %s; restarting it", error)
        self._set_health(False)
        self._teardown(graceful=False)
        if not self._closed:
            threading.Thread(target=self._recover, name="swd-cfg-recover", daemon=True).start()

    def _recover(self) -> None:
        delay = self._restart_delay_s
        while not self._closed:
            time.sleep(delay)
            try:
                with self._lock:
                    if self._closed:
                        return
                    self._spawn()
                self._set_health(True)
                return
            except Exception as error:  # keep trying: the replica stays NOT_SERVING meanwhile
                log.error("restarting the latent-parallel follower failed: %s", error)
                with self._lock:
                    self._teardown(graceful=False)
                delay = min(2 * delay, 30.0)

    def _teardown(self, graceful: bool) -> None:
        if self._control is not None and graceful and self._follower_alive():
            try:
                self._control.send(None)
            except OSError:
                pass
        if self._process is not None:
            self._process.join(2 if graceful else 0.1)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
        for closeable in (self._exchange, self._control):
            if closeable is not None:
                try:
                    closeable.close()
                except Exception:
                    pass
        self._process, self._control, self._exchange = None, None, None

    def _set_health(self, serving: bool) -> None:
        if serving:
            self._healthy.set()
        else:
            self._healthy.clear()
        self._on_health(serving)
