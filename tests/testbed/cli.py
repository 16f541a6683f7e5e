"""`scripts/testbed build|up|down|status`: the Makefile's entry to the test bed.

The state dir is $SWIFTDIFFUSION_TESTBED_DIR (default /tmp/swiftdiffusion-testbed);
the binary cache is $SWIFTDIFFUSION_CACHE/testbed (default ~/.cache/swiftdiffusion).
"""
from __future__ import annotations

import argparse
import sys
import time

from tests.testbed import build
from tests.testbed.cluster import TestBed, TestBedError, default_state_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/testbed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("build", "up", "down", "status"))
    parser.add_argument("--fleet", action="store_true",
                        help="GPU nodes run real runtime processes (needs root and the project's venv)")
    args = parser.parse_args(argv)
    command = args.command
    bed = TestBed(default_state_dir(), fleet=args.fleet)
    started = time.monotonic()
    try:
        if command == "build":
            print(build.ensure_built())
        elif command == "up":
            kubeconfig = bed.up()
            if args.fleet:
                from tests.testbed.fleet.provision import provision  # needs the project's venv

                print(f"testbed: operator up ({provision(bed)}); dns {bed.network().dns_ip}", file=sys.stderr)
            print(kubeconfig)
        elif command == "down":
            bed.down()
        else:
            up = bed.is_up()
            print(f"testbed: {'up' if up else 'down'} ({bed.state})")
            return 0 if up else 1
    except TestBedError as error:
        print(f"testbed: {error}", file=sys.stderr)
        return 1
    print(f"testbed: {command} took {time.monotonic() - started:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
