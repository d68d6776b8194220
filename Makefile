# Everything a fresh machine needs: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-log bench-open bench-cli bench-import bench-containerd bench-drivers crash-test damage-test protos man completion clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH bash tools/demo.sh

# A private base temp dir: pytest's shared /tmp/pytest-of-$USER rotates (deletes) the
# directories of other runs going on at the same time. Removed after a passing run
# (never across a mount a test left behind); kept, and named, after a failing one.
test: $(STAMP)
	@base=$$(mktemp -d /tmp/layerstore-test.XXXXXX); \
	$(BIN)/python -m pytest -q -p no:cacheprovider --basetemp="$$base" $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 0 ]; then rm -rf --one-file-system "$$base"; else echo "test files kept in $$base"; fi; \
	exit $$status

# The man page and shell completion, generated from the CLI's command table.
man: $(STAMP)
	$(BIN)/python tools/manpage.py -o build/man/layerstore.1

completion: $(STAMP)
	mkdir -p build/completion
	$(BIN)/python -m eventstore.cli completion bash > build/completion/layerstore.bash
	$(BIN)/python -m eventstore.cli completion zsh > build/completion/_layerstore

bench: bench-log bench-open bench-cli bench-import bench-drivers

bench-log: $(STAMP)
	$(BIN)/python tools/bench_log.py

bench-open: $(STAMP)
	$(BIN)/python tools/bench_open.py --repeat 3

bench-cli: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python tools/bench_cli.py --sizes 1000 10000 --rounds 11

bench-import: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python tools/bench_import.py

# layerstore serve --containerd against containerd's overlayfs snapshotter (root, containerd, runc, umoci)
bench-containerd: $(STAMP)
	$(BIN)/python tools/bench_containerd.py

# Regenerate containerd's API modules from eventstore/containerd/api/*.proto (they are
# checked in; docs/containerd.md says why grpcio-tools is pinned). A venv of its own:
# grpcio-tools pins the protobuf it generates for.
PROTO_VENV := .venv-protos
protos:
	test -x $(PROTO_VENV)/bin/python || $(PYTHON) -m venv $(PROTO_VENV)
	$(PROTO_VENV)/bin/pip install -q 'grpcio-tools==1.62.3'
	$(PROTO_VENV)/bin/python -m grpc_tools.protoc -I . --python_out=. eventstore/containerd/api/mount.proto
	$(PROTO_VENV)/bin/python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. \
	    eventstore/containerd/api/snapshots.proto
# btrfs vs vfs vs overlay: a 1,000-layer chain and an image import, each on a fresh
# loop filesystem; the CLI is a non-editable pip install into a venv of its own
bench-drivers: $(STAMP)
	$(BIN)/python tools/bench_drivers.py --layers 1000 --chain-rounds 1 --rounds 3

# The long crash run (docs/crash-testing.md), an hour or more: per seed and driver, every
# crash point of the built-in workload with every point of each recovery crashed too,
# then a power loss in each mode, then injected I/O errors; then the stateful model test
# with many examples.
# `make test` runs the CI-sized version of all this.
CRASH_SEEDS ?= 1 2
CRASH_DRIVERS ?= vfs overlay btrfs fuse-overlayfs
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

# The whole damage matrix (docs/damage-testing.md) on each driver, a few minutes each;
# `make test` runs a CI-sized part of it (tests/damage/). Every driver runs even when
# one finds violations; the target fails if any did.
DAMAGE_DRIVERS ?= vfs overlay fuse-overlayfs btrfs
damage-test: $(STAMP)
	status=0; for driver in $(DAMAGE_DRIVERS); do \
	    $(BIN)/python -m replay.damage --driver $$driver || status=1; \
	done; exit $$status

clean:
	rm -rf $(VENV) $(PROTO_VENV) build *.egg-info
