# The two commands of a new user: `make demo` and `make test`.
# Both set up everything they need (virtualenv, this package, the pinned opencode), idempotently.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OPENCODE_VERSION := $(shell sed -n 's/^OPENCODE_VERSION = "\(.*\)"/\1/p' src/opencode_wrapper/_proc/binary.py)
OPENCODE_PREFIX := .opencode/$(OPENCODE_VERSION)
OPENCODE := $(OPENCODE_PREFIX)/node_modules/.bin/opencode
export OPENCODE_BINARY := $(abspath $(OPENCODE))

.PHONY: setup demo test reliability docs lint typecheck unit e2e clean

setup: $(VENV)/.installed $(OPENCODE)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

$(OPENCODE): | $(VENV)/.installed
	$(BIN)/python -m opencode_wrapper install-opencode --version $(OPENCODE_VERSION) --prefix $(OPENCODE_PREFIX)

demo: setup
	$(BIN)/opencode-wrapper demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

# The reliability suite at the issue's counts (50 cancellations, 32+32 parallel runs, 500-turn soak),
# then its figures as Markdown. `make test` runs the same suite at a short scale.
reliability: setup
	$(BIN)/python benchmarks/reliability_report.py --scale full -n 2

# The documentation site (mkdocs.yml) into site/, failing on any warning. `make test` builds it too
# (tests/test_docs_site.py) and runs its examples (tests/test_docs_examples.py).
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .opencode .pytest_cache .mypy_cache .ruff_cache site
