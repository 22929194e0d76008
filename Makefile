# Quick start: `make run` starts everything locally; `make test` runs the suite; `make lint` checks style and types.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: run test bench unit lint clean

# constraints.txt holds the versions tested (see "Dependencies" in README.md).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/bulkjobs dev

# The dashboard's browser test drives Debian's Chromium (Playwright never downloads a browser here).
$(CHROMIUM):
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

# Two pytest processes, each with its own broker, take whole modules (a module's stacks are its
# own); the tests marked serial run after them in one process.
test: $(STAMP) $(CHROMIUM)
	$(BIN)/pytest -q -n 2 --dist loadfile -m "not serial"
	$(BIN)/pytest -q -m serial

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/mypy bulkjobs

bench: $(STAMP)
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) data
