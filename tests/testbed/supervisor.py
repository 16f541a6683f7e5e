"""Runs a command again each time it exits, as the kubelet restarts a Deployment's crashed
container: the test bed plays KEDA's Deployments with host processes, and a KEDA that
panics must come back as its pod would (`python -m tests.testbed.supervisor -- ARGV`).

The delay doubles from 1 s to 30 s while the command keeps failing (CrashLoopBackOff's
10 s to 5 min, shortened for tests) and starts over after a run of a minute. The command
is tied to this process (PR_SET_PDEATHSIG) and shares its process group, so stopping the
group (processes.stop) or killing this process stops both.
"""
from __future__ import annotations

import sys
import time

from tests.testbed.processes import popen_tied

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
STABLE_RUN = 60.0


def supervise(argv: list[str]) -> None:
    delay = FIRST_DELAY
    restarts = 0
    while True:
        started = time.monotonic()
        code = popen_tied(argv).wait()
        ran_for = time.monotonic() - started
        if ran_for >= STABLE_RUN:
            delay = FIRST_DELAY
        restarts += 1
        print(f"supervisor: {argv[0]} exited with {code} after {ran_for:.1f} s; restart {restarts} in {delay:.0f} s",
              flush=True)
        time.sleep(delay)
        delay = min(2 * delay, MAX_DELAY)


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] != "--" or len(args) < 2:
        sys.exit("usage: python -m tests.testbed.supervisor -- COMMAND [ARG...]")
    supervise(args[1:])


if __name__ == "__main__":
    main()
