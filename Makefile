# Ember's entry points. `make demo` and `make test` work on a fresh clone: each runs `setup`
# first, which installs libtorch once (cached in ~/.cache/ember) and is a no-op afterwards.
CARGO ?= cargo
# Benchmarks run by `make bench` (`ember bench NAME` for each).
BENCHES ?= sft sample reward

.PHONY: all setup build test demo fmt clippy bench ci

all: build

setup:
	bash scripts/setup-libtorch.sh

build: setup
	$(CARGO) build --release

test: setup
	$(CARGO) test --release --workspace

demo: setup
	$(CARGO) run --release -- demo

fmt:
	$(CARGO) fmt --all

clippy: setup
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

bench: setup
	$(CARGO) build --release
	for b in $(BENCHES); do ./target/release/ember bench $$b || exit 1; done

ci:
	bash .ci/run
