# The README's two commands: `make demo` and `make test`.
# Both install what is missing on a fresh Debian/Ubuntu machine (apt packages as root, the venv, pip packages).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := iproute2 nftables openssh-server util-linux procps
STAMP := $(VENV)/.installed

.PHONY: demo test deps sysdeps venv lint typecheck unit sim netns soak bench clean

demo: deps
	$(BIN)/python -m labctl.demo

test: deps lint typecheck
	$(BIN)/python -m pytest -n 2 -q tests

deps: sysdeps $(STAMP)

sysdeps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v docker >/dev/null 2>&1 || missing="$$missing docker-cli"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing apt packages:$$missing (run as root)"; exit 1; fi; \
	  echo "installing apt packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null \
	    || { [ -n "$${missing##*docker-cli*}" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null; }; \
	fi
	@$(PY) -c 'import venv, ensurepip' 2>/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

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
