# SwiftDiffusion developer entry points. Every install step lives here or in
# scripts/, so a fresh machine needs nothing but this repository.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Three workers on two cores (0: a single process): the fleet and test bed groups wait on
# control loops much of the time, and two left a sixth of the cores idle. tests/workers.py
# decides which tests share a worker; docs/testbed.md has the timings and the races fixed.
TEST_WORKERS ?= 3

.PHONY: venv protos crds demo test calibrate calibrate-repeat testbed prometheus cluster-up cluster-down fleet-up fleet-down clean

venv: $(STAMP) protos

# The dependencies live in a cache folder, installed and compiled once per dependency set;
# .venv holds the project and points at them (scripts/venv says how).
$(STAMP): pyproject.toml scripts/venv
	PYTHON=$(PYTHON) scripts/venv $(VENV)
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
# pods and through the simulator; prints the comparison (docs/planner.md, Calibrating; every run: docs/calibration.md).
calibrate: venv testbed prometheus
	$(PY) -m pytest -m calibration -k "not against_itself" -s $(PYTEST_ARGS)

# The same trace replayed twice on the fleet: how far the fleet lands from itself, beside how
# far the simulator lands from each replay (14-16 min).
calibrate-repeat: venv testbed prometheus
	$(PY) -m pytest -m calibration -k against_itself -s $(PYTEST_ARGS)

demo: venv
	$(PY) -m swiftdiffusion.runtime.dev.demo

test: venv testbed prometheus images
	$(PY) -m pytest -n $(TEST_WORKERS) --durations=25 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
