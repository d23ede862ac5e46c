# Every target works on a fresh machine: it makes .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NATIVE := $(VENV)/.native
# Every install takes the versions pinned in constraints.txt, the build's own (hatchling, the
# hook's mypy) too: pip hands PIP_CONSTRAINT to its isolated build environments. `make lock`
# is the one way to move them.
LOCK   := constraints.txt
export PIP_CONSTRAINT := $(CURDIR)/$(LOCK)
# Compiled code may inline what it imports: any source change recompiles (hatch_build.py).
SOURCES := $(shell find src/planaria -name '*.py')

.PHONY: install lock system-deps bench-deps demo test test-fast lint typecheck pytest pytest-pure \
        stress bench clean

# Debian packages the tests and benchmarks use: redis-cli, redis-benchmark and redis-server
# prove that existing Redis clients work against planaria and anchor its numbers; ZooKeeper
# and etcd are coordination backends (tests start ensembles on loopback); redis-sentinel and
# etcd are the chaos harness's peers; iptables cuts links inside the harness's namespaces.
SYSTEM_TOOLS    := redis-cli redis-benchmark redis-server redis-sentinel etcd iptables \
                   /usr/share/zookeeper/bin/zkServer.sh
SYSTEM_PACKAGES := redis-tools redis-server redis-sentinel etcd-server zookeeper iptables

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Re-resolve every dependency to its newest release allowed by pyproject.toml, in a venv of
# its own, and write the pins; commit the result once `make test` passes with it.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	PIP_CONSTRAINT= .lock-venv/bin/python -m pip install --quiet --upgrade pip
	PIP_CONSTRAINT= .lock-venv/bin/python -m pip install --quiet -e '.[dev]' hatchling
	{ echo '# Pinned by `make lock`: every version `make install`, `make test` and CI use.'; \
	  echo '# pyproject.toml keeps the lower bounds for users who install the package.'; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | LC_ALL=C sort -f; } > $(LOCK)
	rm -rf .lock-venv

# The hot modules compiled with mypyc, next to their sources (src/planaria/_native.py says
# how import planaria never runs them stale); PLANARIA_COMPILE=0 removes them instead.
$(NATIVE): $(STAMP) $(SOURCES) hatch_build.py
	$(BIN)/python hatch_build.py
	test "$$PLANARIA_COMPILE" = 0 || $(BIN)/python -W error -c \
	  'import planaria._native as n, sys; sys.exit(not n.compiled())'
	touch $(NATIVE)

install: $(NATIVE)

system-deps:
	@missing=; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing=yes; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing $(SYSTEM_PACKAGES) from Debian"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	  else \
	    echo "please install: sudo apt-get install $(SYSTEM_PACKAGES)" >&2; exit 1; \
	  fi; \
	fi

bench-deps: system-deps

demo: $(NATIVE)
	$(BIN)/planaria demo

# The blocking client is generated from the asyncio one: fail when the committed copy differs.
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts hatch_build.py
	$(BIN)/ruff format --check src tests benchmarks scripts hatch_build.py
	$(BIN)/python scripts/unasync.py --check

typecheck: $(STAMP)
	$(BIN)/mypy

# The full gate: lint, types, every test against the compiled build, then the core and
# simulator tests against the pure-Python sources (the specification of the compiled
# modules). Two workers: the process tests run one at a time on one of them, the CPU-bound
# rest on both (tests/conftest.py); PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL := $(if $(filter 0,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS) --dist loadgroup)

pytest: $(NATIVE) system-deps
	$(BIN)/pytest $(PYTEST_PARALLEL)

pytest-pure: $(STAMP)
	PLANARIA_PURE_PYTHON=1 $(BIN)/pytest $(PYTEST_PARALLEL) tests/core tests/sim

test: lint typecheck pytest pytest-pure

# The edit-test loop (CONTRIBUTING.md): pure Python, nothing compiled, no system packages,
# under a minute. Leaves out what starts processes, needs Debian packages or sweeps seeds.
FAST_MARKERS := not slow and not process and not ensemble and not sweep

test-fast: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts hatch_build.py
	PLANARIA_PURE_PYTHON=1 HYPOTHESIS_PROFILE=fast $(BIN)/pytest $(PYTEST_PARALLEL) -m "$(FAST_MARKERS)"

# The whole suite RUNS times in a row beside two CPU burners, stopping at the first failure,
# on the workers make test uses.
RUNS ?= 5

stress: $(NATIVE) system-deps
	PYTEST=$(BIN)/pytest scripts/stress-test.sh -n $(RUNS) $(PYTEST_PARALLEL)

bench: $(NATIVE) bench-deps
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .lock-venv build dist .mypy_cache .pytest_cache .ruff_cache
	find src -name '*.so' -delete
	rm -f src/planaria/_native.json
