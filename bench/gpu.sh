#!/usr/bin/env bash
# The GPU benchmark (bench/gpu.py; --help for its options), run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
[[ -x "$python" ]] || python=python3
export PYTHONPATH="$PWD/runtime${PYTHONPATH:+:$PYTHONPATH}"  # the package, where it is not installed
exec "$python" bench/gpu.py "$@"
