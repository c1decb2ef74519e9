# The README's two commands: `make demo` and `make test`.
# Both install what is missing on a fresh Debian/Ubuntu machine (apt packages as root, the venv, pip packages).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := iproute2 nftables openssh-server util-linux procps iputils-ping curl default-mysql-client redis-tools
TEST_APT_PACKAGES := vagrant docker.io busybox
STAMP := $(VENV)/.installed


.PHONY: compile demo test deps testdeps sysdeps venv lint typecheck unit sim netns soak bench clean

demo: deps
	$(BIN)/python -m labctl.demo

test: deps testdeps lint typecheck
	$(BIN)/python -m pytest -n 2 -q tests

deps: sysdeps $(STAMP) compile

# Debian's vagrant: rendered Vagrantfiles must pass `vagrant validate` (no VirtualBox needed). docker.io + busybox:
# the docker executor's tests start a private dockerd and import a busybox rootfs (the service is never started).
testdeps: sysdeps
	@bash scripts/install-sysdeps.sh $(TEST_APT_PACKAGES)

sysdeps:
	@bash scripts/install-sysdeps.sh $(APT_PACKAGES)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

compile: $(STAMP)
	@$(BIN)/python -m compileall -q -j 0 agents labctl >/dev/null  # agents start faster with bytecode at hand

lint: deps
	$(BIN)/ruff check labctl agents tests bench

typecheck: deps
	$(BIN)/mypy labctl agents

soak: deps
	$(BIN)/python -m pytest -q tests/sim --soak

bench: deps
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
