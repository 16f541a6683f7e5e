# SwiftDiffusion developer entry points. Every install step lives here or in
# scripts/, so a fresh machine needs nothing but this repository.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# uv installs from its cache (~/.cache/uv) by hard links: seconds where pip takes a minute;
# it trusts the system's certificates (a registry proxy's CA), as pip does through pip.conf.
# It compiles the bytecode once (25 s): uv does not by default, and without it every test
# process and fleet pod compiles torch and diffusers again (18 s instead of 7 s an import
# where PYTHONDONTWRITEBYTECODE is set; concurrent processes compiling the same modules elsewhere).
UV_VERSION := 0.13.9
PYTEST_ARGS ?=
# Three workers on two cores (0: a single process): the fleet and test bed groups wait on
# control loops much of the time, and two left a sixth of the cores idle. tests/workers.py
# decides which tests share a worker; docs/testbed.md has the timings and the races fixed.
TEST_WORKERS ?= 3

.PHONY: venv protos crds demo test calibrate testbed prometheus cluster-up cluster-down fleet-up fleet-down clean

venv: $(STAMP) protos

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --system-certs --compile-bytecode --python $(PY) -e '.[runtime,test]'
	touch $@

crds: $(STAMP)
	$(PY) -m swiftdiffusion.operator.generate

protos: $(STAMP)
	$(PY) scripts/gen_protos.py

testbed:
	scripts/testbed build

# promtool and prometheus from Debian's package, unpacked into ~/.cache/swiftdiffusion/prometheus
prometheus:
	scripts/prometheus install

# The operator and runtime images, built offline with podman (installed from Debian as root);
# cached in ~/.cache/swiftdiffusion/images: a second run with no change takes seconds
images: venv
	scripts/images build

cluster-up: testbed
	scripts/testbed up

cluster-down:
	scripts/testbed down

# The fleet: a test bed whose GPU nodes run the pods as runtime processes, with CoreDNS,
# the operator and a model store; prints the kubeconfig (needs root: see docs/testbed.md).
FLEET_DIR ?= /tmp/swiftdiffusion-fleet
fleet-up: venv testbed
	SWIFTDIFFUSION_TESTBED_DIR=$(FLEET_DIR) $(PY) -m tests.testbed.cli up --fleet

fleet-down:
	SWIFTDIFFUSION_TESTBED_DIR=$(FLEET_DIR) $(PY) -m tests.testbed.cli down

# The planner against the fleet (issue 13): a trace with a burst replayed on autoscaled runtime
# pods and through the simulator; prints the comparison (docs/planner.md, Calibrating).
calibrate: venv testbed prometheus
	$(PY) -m pytest -m calibration -s $(PYTEST_ARGS)

demo: venv
	$(PY) -m swiftdiffusion.runtime.dev.demo

test: venv testbed prometheus images
	$(PY) -m pytest -n $(TEST_WORKERS) --durations=25 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
