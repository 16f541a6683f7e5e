"""Loopback ports for local processes, picked where the kernel never hands out ports.

A port the kernel gives for `bind(("127.0.0.1", 0))` comes from the ephemeral range,
the same range outgoing connections take their source ports from: between choosing it
and the child binding it, any client connection (an operator talking to its API server)
may take it. Ports below that range are only ever taken by someone binding them, so a
random free one there stays free until the child binds it.
"""
from __future__ import annotations

import random
import socket
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10000


def _below_ephemeral() -> range:
    try:
        first = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    return range(_LOWEST, max(first, _LOWEST + 1000))


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` right now, outside the ephemeral range."""
    candidates = _below_ephemeral()
    chosen: list[int] = []
    held: list[socket.socket] = []
    try:
        for port in random.sample(candidates, len(candidates)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
            chosen.append(port)
            if len(chosen) == count:
                return chosen
        raise RuntimeError(f"fewer than {count} free ports on {host} in {candidates}")
    finally:
        for sock in held:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]
