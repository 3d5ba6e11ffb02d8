# nodeos developer entry points. `make demo` and `make test` install everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit e2e bench faults chaos scale binaries generate venv clean-venv image \
	lock image-tools
SEEDS ?= 1000
START ?= 0
IMAGE ?= localhost/nodeos:0.1.0
IMAGE_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

demo: $(STAMP) binaries ## the live demo: sandbox + simulated fleet, shown as it happens
	$(BIN)/nodeos demo

test: $(STAMP) binaries image-tools lint ## every test tier (static, unit, contract, component, e2e)
	$(BIN)/pytest -p no:cacheprovider

lint: $(STAMP) ## ruff, mypy --strict, import contracts
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/ruff format --check operator tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m nodeos.codegen --check

unit: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider tests/unit tests/contract tests/component

e2e: $(STAMP) binaries
	$(BIN)/pytest -p no:cacheprovider tests/e2e

generate: $(STAMP) binaries ## regenerate CRDs, chart copy, reference, gRPC stubs, deploy/
	$(BIN)/python -m nodeos.codegen
	$(BIN)/python -m nodeos.codegen --render-chart

bench: $(STAMP) binaries ## rollout benchmark (run by hand): overhead, latency, footprint
	$(BIN)/python benchmarks/rollout.py $(BENCH_ARGS)

faults: $(STAMP) ## fault campaign over the engine simulation (run by hand): SEEDS=1000 START=0
	PYTHONHASHSEED=0 PYTHONPATH=operator:tests $(BIN)/python -m sim.campaign --seeds $(SEEDS) --start $(START)

scale: $(STAMP) binaries ## the 200-node rollout with a workload under the invariant monitor, alone
	$(BIN)/pytest -p no:cacheprovider tests/e2e/test_scale.py -q

chaos: $(STAMP) binaries ## chaos on the real sandbox (run by hand): seeds 1..SEEDS
	NODEOS_CHAOS_SEEDS=$$(seq -s, 1 $(SEEDS)) $(BIN)/pytest -p no:cacheprovider tests/e2e/test_chaos.py -q

image-tools: ## buildah and mmdebstrap from Debian, when missing (the image tests use them)
	@command -v buildah >/dev/null && command -v mmdebstrap >/dev/null || { \
		echo "installing buildah and mmdebstrap (Debian packages) to build the operator image"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah mmdebstrap; }

image: $(STAMP) image-tools ## the operator image with buildah: IMAGE=name IMAGE_ARGS="--stand-in-bases --platform linux/arm64"
	$(BIN)/nodeos sandbox image --tag $(IMAGE) $(IMAGE_ARGS)

lock: $(STAMP) ## re-resolve the image's hash-locked dependencies (requirements/) from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 --universal \
		--quiet --custom-compile-command "make lock" -o requirements/runtime.txt
	$(BIN)/uv pip compile requirements/build.in --generate-hashes --python-version 3.11 \
		--universal --quiet --custom-compile-command "make lock" -o requirements/build.txt

binaries: $(STAMP) ## build the sandbox's Go binaries when missing (cached outside the repo)
	$(BIN)/nodeos sandbox build

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "nodeos needs Python >= 3.11 (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
