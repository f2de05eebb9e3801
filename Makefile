# evo — the two commands: `make run` (a simulated machine) and `make test` (the whole suite).
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
STAMP   := $(VENV)/.installed
DEB_PKGS := mosquitto mosquitto-clients iproute2 chromium chromium-driver gcc
PYTEST_ARGS ?=

.PHONY: setup run test bench clean protos soak kernels bytecode

setup: $(STAMP) debs kernels bytecode

# The modules' bytecode, written once here: every module process imports ~100 of our files at each
# start, and where .pyc files are not written at import (PYTHONDONTWRITEBYTECODE, a read-only tree)
# each start would compile them again (0.7 s more for a cold `evo up` measured on the 2-core box).
# Up-to-date files are skipped, so this costs ~0.3 s when nothing changed.
PKGS := common evo hal control_unit recipe_executor mqtt_bridge grpc_bridge
bytecode: $(STAMP)
	@$(PY) -m compileall -q $(PKGS)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	@touch $(STAMP)

# Compile the cycle kernels before any module starts (common/jit.py): the module built ahead of time
# that HAL and CU load in ~1 ms without importing numba, and numba's cache (used while that module is
# stale, e.g. right after a kernel source changed). --if-stale: nothing to do (~0.3 s) when it matches.
kernels: $(STAMP)
	@for m in control_unit.kernels hal.kernels; do $(PY) -m $$m --if-stale || exit 1; done

# Debian packages the tests and the embedded broker need; installed only when missing.
debs:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

run: setup
	$(VENV)/bin/evo up

test: setup
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

# The long fault-injection runs of issue 16 (60 SIGKILLs under load, the watchdog killed again and again,
# the broker frozen 30 s and killed repeatedly, thousands of fuzzed gRPC calls, `evo up` on every broken
# config); `make test` runs their short versions only. Figures in benchmarks/results/fault_soak.json and BENCHMARKS.md.
soak: setup
	EVO_SOAK=1 $(PY) -m pytest -p no:cacheprovider -v -rA -k soak tests/test_fault_*.py $(PYTEST_ARGS)

bench: setup
	$(PY) -m benchmarks.run_all

# Regenerate the Python modules of every .proto (repo root as include path, so the modules are
# package-qualified: grpc_bridge.protos.evo.v1.*_pb2, common.protos.evo.v1.supervisor_pb2);
# tests/test_grpc_protos.py checks the bridge's are current.
protos:
	$(PY) -m grpc_bridge.codegen
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. common/protos/evo/v1/supervisor.proto
	$(PY) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. mqtt_bridge/sparkplug/sparkplug_b.proto

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
