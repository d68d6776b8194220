# Everything a fresh machine needs: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-log bench-open bench-cli bench-import crash-test man completion clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH bash tools/demo.sh

# A private base temp dir: pytest's shared /tmp/pytest-of-$USER rotates (deletes) the
# directories of other runs going on at the same time.
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --basetemp="$$(mktemp -d /tmp/layerstore-test.XXXXXX)" $(PYTEST_ARGS)

# The man page and shell completion, generated from the CLI's command table.
man: $(STAMP)
	$(BIN)/python tools/manpage.py -o build/man/layerstore.1

completion: $(STAMP)
	mkdir -p build/completion
	$(BIN)/python -m eventstore.cli completion bash > build/completion/layerstore.bash
	$(BIN)/python -m eventstore.cli completion zsh > build/completion/_layerstore

bench: bench-log bench-open bench-cli bench-import

bench-log: $(STAMP)
	$(BIN)/python tools/bench_log.py

bench-open: $(STAMP)
	$(BIN)/python tools/bench_open.py --repeat 3

bench-cli: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python tools/bench_cli.py --sizes 1000 10000 --rounds 11

bench-import: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python tools/bench_import.py

# The long crash run (docs/crash-testing.md), an hour or more: per seed and driver, every
# crash point of the built-in workload with every point of each recovery crashed too,
# then a power loss in each mode, then injected I/O errors; then the stateful model test
# with many examples.
# `make test` runs the CI-sized version of all this.
CRASH_SEEDS ?= 1 2
CRASH_DRIVERS ?= vfs overlay
CRASH_EXAMPLES ?= 2000
crash-test: $(STAMP)
	set -e; for seed in $(CRASH_SEEDS); do for driver in $(CRASH_DRIVERS); do \
	    $(BIN)/python -m replay.crash --driver $$driver --seed $$seed --recovery-crashes all; \
	    for mode in drop random torn; do \
	        $(BIN)/python -m replay.crash --driver $$driver --seed $$seed --power-loss --power-mode $$mode \
	            --recovery-crashes 2; \
	    done; \
	    for fault in eio enospc; do \
	        $(BIN)/python -m replay.crash --driver $$driver --seed $$seed --fault $$fault; \
	    done; \
	done; done
	LAYERSTORE_STATEFUL_EXAMPLES=$(CRASH_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider tests/stateful

clean:
	rm -rf $(VENV) build *.egg-info
