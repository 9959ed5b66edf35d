# The two commands: `make run` and `make test`. Both set everything up themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ETCD := $(shell command -v etcd 2>/dev/null)
# PostgreSQL's binaries live under /usr/lib/postgresql/<major>/bin (not on PATH); MariaDB's in /usr/sbin.
PG_CTL := $(shell command -v pg_ctl 2>/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | head -n 1)
MARIADBD := $(shell command -v mariadbd 2>/dev/null || ls /usr/sbin/mariadbd 2>/dev/null)
CHROMIUM := $(shell command -v chromium 2>/dev/null)

.PHONY: run test test-slow proto proto-check bench etcd databases chromium install clean docs

# Install the project (building the Cython extension) into .venv, once per change
# of the build inputs.
$(STAMP): pyproject.toml setup.py $(wildcard _placement/*.pyx _placement/*.pxd)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,proto,bench]'
	touch $@

install: $(STAMP) etcd databases chromium

# etcd server from Debian (3.4.23: a release etcd recommends); nothing to do if on PATH.
etcd:
ifeq ($(ETCD),)
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server
endif

# PostgreSQL (15) and MariaDB (10.11) servers from Debian, for the source connectors' tests
# (the tests start their own throw-away servers); nothing to do if both are installed.
databases:
ifeq ($(PG_CTL),)
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
endif
ifeq ($(MARIADBD),)
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server
endif

# Chromium from Debian, run headless by the status page's browser test; nothing to do if on PATH.
chromium:
ifeq ($(CHROMIUM),)
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
endif

run: install
	$(VENV)/bin/leibrix local

test: install
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -q --runslow $(PYTEST_ARGS)
	$(PY) -m bench.soak --quick

proto: install
	$(PY) proto/generate.py

proto-check: install
	$(PY) proto/generate.py --check

# Regenerate the configuration reference in docs/operations.md from the master's options.
docs: $(STAMP)
	$(PY) -m leibrix.master._reference --write docs/operations.md

bench: install
	$(PY) -m bench.placement
	$(PY) -m bench.failover

clean:
	rm -rf $(VENV) build *.egg-info _placement/*.c _placement/*.so
