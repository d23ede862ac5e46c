# Every target works on a fresh machine: it makes .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install system-deps bench-deps demo test lint typecheck pytest bench clean

# Debian packages the tests and benchmarks use: redis-cli, redis-benchmark and redis-server
# prove that existing Redis clients work against planaria and anchor its numbers; ZooKeeper
# and etcd are coordination backends (tests start ensembles on loopback); redis-sentinel and
# etcd are the chaos harness's peers; iptables cuts links inside the harness's namespaces.
SYSTEM_TOOLS    := redis-cli redis-benchmark redis-server redis-sentinel etcd iptables \
                   /usr/share/zookeeper/bin/zkServer.sh
SYSTEM_PACKAGES := redis-tools redis-server redis-sentinel etcd-server zookeeper iptables

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

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

demo: $(STAMP)
	$(BIN)/planaria demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) system-deps
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP) bench-deps
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build dist .mypy_cache .pytest_cache .ruff_cache
