"""Starting and stopping the test bed's daemons, each in its own process group with
its pid recorded in the state directory, so `down` finds them from any process."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SETPRIV = "/usr/bin/setpriv"  # util-linux, in every Debian


def popen_tied(argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """Starts `argv` so that the kernel kills it when the thread that started it ends
    (PR_SET_PDEATHSIG), and returns once it runs `argv[0]` itself.

    util-linux's setpriv sets the signal and then execs: a `preexec_fn` doing the same would
    run Python in the child of a multi-threaded process, which can deadlock or abort.
    """
    process = subprocess.Popen([SETPRIV, "--pdeathsig", "KILL", "--", *argv], **options)
    deadline = time.monotonic() + 10
    while _executable(process.pid) == SETPRIV and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return process


def start(name: str, argv: list[str], state: Path, *, tied_to_parent: bool, env: dict[str, str] | None = None) -> int:
    """Starts `argv` detached in a new session, logging to `<state>/logs/<name>.log`.

    `tied_to_parent` makes the kernel kill it if the starting process dies, so a test
    session killed with SIGKILL leaves nothing behind; the CLI's `up` leaves it off.
    """
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        options: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": log, "stderr": subprocess.STDOUT,
                                   "start_new_session": True, "env": env}
        process = popen_tied(argv, **options) if tied_to_parent else subprocess.Popen(argv, **options)
    pids = state / "pids"
    pids.mkdir(exist_ok=True)
    (pids / name).write_text(f"{process.pid} {os.path.realpath(argv[0])}\n")
    return process.pid


def supervised(argv: list[str]) -> list[str]:
    """`argv` restarted whenever it exits, as a Deployment's pod would be (tests/testbed/supervisor.py;
    run it with the checkout on PYTHONPATH)."""
    return [sys.executable, "-m", "tests.testbed.supervisor", "--", *argv]


def members(state: Path, name: str) -> list[int]:
    """The live processes in the group recorded as `name`, other than its leader (a
    supervised command's current run, say)."""
    entry = recorded(state).get(name)
    if entry is None or not _alive_as(*entry):
        return []
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        pid = int(stat.parent.name)
        fields = _stat(pid)
        if fields is not None and fields[0] != "Z" and int(fields[2]) == entry[0] and pid != entry[0]:
            found.append(pid)
    return found


def live(pid: int) -> bool:
    """True while `pid` exists and has not exited (a zombie has)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, parent, process group, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _executable(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def _alive_as(pid: int, executable: str) -> bool:
    """True while `pid` runs `executable` (guards against a recycled pid)."""
    return _executable(pid) == executable


def recorded(state: Path) -> dict[str, tuple[int, str]]:
    pids = state / "pids"
    if not pids.is_dir():
        return {}
    entries = {}
    for record in pids.iterdir():
        pid, executable = record.read_text().split(maxsplit=1)
        entries[record.name] = (int(pid), executable.strip())
    return entries


def running(state: Path) -> dict[str, bool]:
    return {name: _alive_as(pid, exe) for name, (pid, exe) in recorded(state).items()}


def _reap(pid: int) -> None:
    """Collects the exit status when we are the parent, so no zombie holds the pid."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_all(state: Path, order: list[str], grace: float = 10.0) -> None:
    """Stops every recorded process: those in `order` first, in that order, then the rest."""
    entries = recorded(state)
    for name in [n for n in order if n in entries] + [n for n in entries if n not in order]:
        stop(state, name, grace)


def stop(state: Path, name: str, grace: float = 10.0) -> None:
    """SIGTERMs the process group recorded as `name`, SIGKILLs it if it outlives `grace`."""
    entry = recorded(state).get(name)
    if entry is None:
        return
    pid, executable = entry
    if _alive_as(pid, executable):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not _alive_as(pid, executable):
            break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while _alive_as(pid, executable):
            _reap(pid)
            time.sleep(0.05)
    (state / "pids" / name).unlink()


@contextlib.contextmanager
def paused(state: Path, name: str) -> Iterator[None]:
    """The process group recorded as `name` stopped for the block and continued after it (a
    kubelet that falls behind, say); nothing is paused where none is recorded (a cluster that
    is not a test bed)."""
    entry = recorded(state).get(name)
    pid = entry[0] if entry is not None and _alive_as(*entry) else None
    if pid is not None:
        os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)
