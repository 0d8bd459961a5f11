# gpufleet: `make run` (the demo on a local real cluster) and `make test` (every test).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export PATH := $(HOME)/.cache/gpufleet/bin:$(PATH)

.PHONY: help run test unit integration venv deps bins cluster-up cluster-down crds check-crds lint fuzz chaos bench bench-frontier bench-scenarios bench-spot bench-spot-multizone bench-gputypes bench-quick bench-forecast bench-scale bench-scale-quick clean image image-report bench-quota bench-run-time

help:
	@echo "make run          local cluster + operator + demo InferenceService (watch with kubectl)"
	@echo "make test         all tests (unit, property, integration on the real local cluster)"
	@echo "make image        the operator image from the Dockerfile with podman (hack/image.sh; IMAGE=, BASE= override)"
	@echo "make cluster-up   start the local control plane with fake GPU nodes; cluster-down stops it"
	@echo "make crds         regenerate crds/ from the pydantic models; check-crds fails on drift"
	@echo "make chaos        faults on a local real cluster (kill -9, API server, etcd, Prometheus, spot storm): reports/reliability"
	@echo "make fuzz         InferenceService specs from the CRD schema against the local API server (FUZZ_SPECS=2000)"
	@echo "make bench        simulator benchmark: frontiers (GRID=quick|reduced|full), scenarios, spot"
	@echo "make bench-quick  the frontier benchmark's quick grid (< 5 min on 2 cores); bench-forecast: forecasting"
	@echo "make bench-quota  eight services in three tiers under a shared GPU quota: arbitration vs static HPAs"
	@echo "make bench-scale  one operator vs 50/200/500 InferenceServices on the local cluster (reports/scale)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

deps:
	@hack/deps.sh

bins:
	@hack/build-cluster-bins.sh

# The operator image the chart runs (ghcr.io/gpufleet/gpufleet:<appVersion>), built with podman on a
# Debian base made by mmdebstrap (BASE=python:3.11-slim-bookworm builds on a pullable one instead).
image:
	@hack/image.sh

# The same build, and reports/image/README.md: the image's size, layers and largest packages.
image-report:
	@hack/image.sh --report reports/image

cluster-up: venv bins
	@hack/cluster.sh up

cluster-down:
	@hack/cluster.sh down

crds: venv
	cd /tmp && $(CURDIR)/$(PY) -m gpufleet.api.crd > $(CURDIR)/crds/gpufleet.io_inferenceservices.yaml
	cp crds/gpufleet.io_inferenceservices.yaml charts/gpufleet/crds/gpufleet.io_inferenceservices.yaml
	cd /tmp && $(CURDIR)/$(PY) -m gpufleet.api.quota_crd > $(CURDIR)/crds/gpufleet.io_gpuquotas.yaml
	cp crds/gpufleet.io_gpuquotas.yaml charts/gpufleet/crds/gpufleet.io_gpuquotas.yaml

check-crds: venv
	@cd /tmp && $(CURDIR)/$(PY) -m gpufleet.api.crd | diff -u $(CURDIR)/crds/gpufleet.io_inferenceservices.yaml - \
	  && echo "crds/ matches the models" || (echo "crds/ drifted from gpufleet.api.models: run 'make crds'"; exit 1)
	@cmp -s crds/gpufleet.io_inferenceservices.yaml charts/gpufleet/crds/gpufleet.io_inferenceservices.yaml \
	  && echo "the chart's CRD matches crds/" || (echo "charts/gpufleet/crds/ drifted from crds/: run 'make crds'"; exit 1)
	@cd /tmp && $(CURDIR)/$(PY) -m gpufleet.api.quota_crd | diff -u $(CURDIR)/crds/gpufleet.io_gpuquotas.yaml - \
	  && echo "crds/ GPUQuota matches gpufleet.api.quota" || (echo "crds/ drifted from gpufleet.api.quota: run 'make crds'"; exit 1)
	@cmp -s crds/gpufleet.io_gpuquotas.yaml charts/gpufleet/crds/gpufleet.io_gpuquotas.yaml \
	  && echo "the chart's GPUQuota CRD matches crds/" || (echo "charts/gpufleet/crds/ drifted from crds/: run 'make crds'"; exit 1)

# The chaos suite (tests/chaos, docs/safety.md) on a cluster of its own (GPUFLEET_TEST_CLUSTER, default
# gpufleet-chaos): CHAOS_ROUNDS kill -9 rounds (5 trials each), the Prometheus faults for
# CHAOS_PROMETHEUS_S, the API server blackholed CHAOS_BLACKHOLE_S; CHAOS_SEED repeats a schedule.
# Writes reports/reliability; `make test` runs a reduced set (tests/integration/test_chaos.py).
CHAOS_ROUNDS ?= 10
CHAOS_PROMETHEUS_S ?= 600
CHAOS_BLACKHOLE_S ?= 90
chaos: venv deps bins
	$(PY) -m tests.chaos --out reports/reliability --rounds $(CHAOS_ROUNDS) --prometheus-s $(CHAOS_PROMETHEUS_S) \
	  --blackhole-s $(CHAOS_BLACKHOLE_S) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

# Spec fuzzing on the local real API server (docs/safety.md): FUZZ_SPECS specs generated from the
# CRD's schema, sent with server-side dry-run, every admitted one run through the operator; the
# counts and the seed are printed and kept in reports/reliability/fuzz.json, on the chaos report's page
# (FUZZ_SEED=<seed> repeats a run). `make test` runs 200.
FUZZ_SPECS ?= 2000
fuzz: venv deps bins
	GPUFLEET_FUZZ_SPECS=$(FUZZ_SPECS) GPUFLEET_FUZZ_OUT=reports/reliability $(if $(FUZZ_SEED),GPUFLEET_FUZZ_SEED=$(FUZZ_SEED)) \
	  $(VENV)/bin/pytest tests/integration/test_spec_fuzz.py -s

lint: venv
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Test files run on TEST_WORKERS processes (pytest-xdist, whole files per worker); each worker that
# reaches an integration test starts a local cluster of its own (tests/integration/support.py).
# Most of an integration test's time is waiting on control loops, so two fit on 2 cores.
TEST_WORKERS ?= 2
PYTEST := $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

unit: venv
	$(PYTEST) tests/unit

integration: venv deps bins
	$(PYTEST) tests/integration

test: venv deps bins
	$(PYTEST) tests

run: venv deps bins
	@hack/run-demo.sh

# The simulator benchmark. GRID: quick | reduced | full (benchmarks/frontier.py --plan prints a grid's
# run count and estimated time); WORKERS: processes (default: the CPU count); BENCH_ARGS=--fresh
# starts over instead of resuming. The frontier suite rewrites README.md's numbers block.
GRID ?= full
WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
SPOT_ZONES ?= aws-02-15-2023/us-west-2a,aws-02-15-2023/us-west-2b,aws-02-15-2023/us-east-2a
# One spot class over a region's zones (a '+' joins the zones of one class).
SPOT_REGIONS ?= aws-02-15-2023/us-west-2a+aws-02-15-2023/us-west-2b+aws-02-15-2023/us-west-2c,aws-02-15-2023/us-east-1a+aws-02-15-2023/us-east-1c+aws-02-15-2023/us-east-1d+aws-02-15-2023/us-east-1f
bench: bench-frontier bench-scenarios bench-spot bench-spot-multizone bench-run-time

bench-frontier: venv
	$(PY) benchmarks/frontier.py --grid $(GRID) --workers $(WORKERS) --out reports/bench --readme README.md $(BENCH_ARGS)

# One 14-day run per policy and knob value, each alone in a fresh process (issue 16 item 7; reads
# the grid's runs.jsonl for each policy's slowest cold setting): reports/bench/run_time.json.
bench-run-time: venv
	$(PY) benchmarks/run_time.py --out reports/bench

bench-scenarios: venv
	$(PY) benchmarks/sim_bench.py --out reports/bench/scenarios

bench-spot: venv
	$(PY) benchmarks/sim_bench.py --spot-zones $(SPOT_ZONES) --out reports/bench/spot

bench-spot-multizone: venv
	$(PY) benchmarks/sim_bench.py --spot-zones $(SPOT_REGIONS) --out reports/bench/spot-multizone

# GPU types and MIG slices (issue 18): the cheapest class mix vs single types, a stock-out (reports/gputypes).
bench-gputypes: venv
	$(PY) benchmarks/gputype_bench.py --workers $(WORKERS)

bench-quick: venv
	$(PY) benchmarks/frontier.py --grid quick --workers $(WORKERS) --out reports/bench-quick --fresh $(BENCH_ARGS)

bench-quota: venv
	$(PY) benchmarks/quota_bench.py --out reports/quota --docs $(BENCH_ARGS)

bench-forecast: venv
	$(PY) benchmarks/forecast_bench.py --out reports/forecast --validation
	$(PY) benchmarks/forecast_bench.py --out reports/forecast

# SCALE_ARGS="--sizes 50 --window-s 60" narrows it; bench-scale-quick is a smoke run (N=10, .run/scale-quick).
bench-scale: venv deps bins
	$(PY) benchmarks/scale_bench.py --sizes 50,200,500 --window-s 120 --out reports/scale $(SCALE_ARGS)

bench-scale-quick: venv deps bins
	$(PY) benchmarks/scale_bench.py --quick $(SCALE_ARGS)

clean:
	rm -rf $(VENV) .run build *.egg-info operator/*.egg-info
