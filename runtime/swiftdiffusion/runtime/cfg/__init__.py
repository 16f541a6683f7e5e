"""Latent parallelism: the two CFG branches on two workers (two GPUs of one base pod).

`LatentParallel` (leader.py) plugs into the denoising loop's seams; `WorkerPair` (pair.py)
owns the follower process and the replica's health; the per-step traffic goes through one
`BranchExchange` (exchange.py) with a socket-pair and a torch.distributed implementation.
"""
from swiftdiffusion.runtime.cfg.exchange import BranchExchange, StepLayout, WorkerLost
from swiftdiffusion.runtime.cfg.leader import LatentParallel, ReportsMerges
from swiftdiffusion.runtime.cfg.pair import BranchFailed, WorkerPair
from swiftdiffusion.runtime.cfg.worker import BranchRequest, ModelRef, WorkerSpec

__all__ = [
    "BranchExchange",
    "BranchFailed",
    "BranchRequest",
    "LatentParallel",
    "ModelRef",
    "ReportsMerges",
    "StepLayout",
    "WorkerLost",
    "WorkerPair",
    "WorkerSpec",
]
