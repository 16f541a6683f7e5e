"""Loopback ports for local processes, picked where the kernel never hands out ports.

A port the kernel gives for `bind(("127.0.0.1", 0))` comes from the ephemeral range,
the same range outgoing connections take their source ports from: between choosing it
and the child binding it, any client connection (an operator talking to its API server)
may take it. Ports below that range are only ever taken by someone binding them.

That someone can be another picker: a process takes seconds to start and bind the port it
was given, and the test suite's workers pick ports all the while. So every picker claims
its ports in a shared folder (a file created exclusively per port) and skips the ports
claimed by others in the last `CLAIM_SECONDS`.
"""
from __future__ import annotations

import os
import random
import socket
import tempfile
import time
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10000
CLAIMS = Path(tempfile.gettempdir()) / "swiftdiffusion-ports"
CLAIM_SECONDS = 300.0  # ample for the process a port is for to start and bind it


def _below_ephemeral() -> range:
    try:
        first = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    return range(_LOWEST, max(first, _LOWEST + 1000))


def _claimed(port: int) -> bool:
    """Claimed by a picker within `CLAIM_SECONDS` (an older claim is dropped)."""
    path = CLAIMS / str(port)
    try:
        if time.time() - path.stat().st_mtime <= CLAIM_SECONDS:
            return True
        path.unlink()
    except FileNotFoundError:
        pass
    return False


def _claim(port: int) -> bool:
    try:
        os.close(os.open(CLAIMS / str(port), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        return True
    except FileExistsError:
        return False


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` right now, outside the ephemeral range and
    claimed by no other picker."""
    CLAIMS.mkdir(mode=0o777, exist_ok=True)
    candidates = _below_ephemeral()
    chosen: list[int] = []
    held: list[socket.socket] = []
    try:
        for port in random.sample(candidates, len(candidates)):
            if _claimed(port):
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
            if not _claim(port):
                continue
            chosen.append(port)
            if len(chosen) == count:
                return chosen
        raise RuntimeError(f"fewer than {count} free ports on {host} in {candidates}")
    finally:
        for sock in held:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]
