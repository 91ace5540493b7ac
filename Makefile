# megavisor: two commands do everything on a fresh machine.
#   make demo   builds the default bundle and runs a few tools on it (no server needed)
#   make test   builds everything and runs every test
#
# One target directory, one profile (release) and one feature set for every build, so
# wasmtime compiles once. CI may point CARGO_TARGET_DIR at a cache outside the clone.

export CARGO_TARGET_DIR ?= $(CURDIR)/target
BUILD      := $(CURDIR)/build
MEGAVISOR  := $(CARGO_TARGET_DIR)/release/megavisor
KEY        := $(BUILD)/keys/megavisor
BUNDLE     := $(BUILD)/bundle
TEST_BUNDLE := $(BUILD)/test-bundle
PYTHON     ?= python3
VENV       := $(BUILD)/venv

.PHONY: setup demo test lint rust-test grpc-test c-test header bench clean

setup: $(BUNDLE)/manifest.json $(TEST_BUNDLE)/manifest.json

$(BUILD)/.ziglang:
	$(PYTHON) -m ziglang version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet ziglang
	mkdir -p $(BUILD) && touch $@

$(BUILD)/guest/megabin.wasm $(BUILD)/guest/testbin.wasm &: $(BUILD)/.ziglang FORCE
	sh guest/build.sh $(BUILD)/guest

$(MEGAVISOR): FORCE
	cargo build --release --locked -p megavisor -p megavisor-bench

$(KEY): | $(MEGAVISOR)
	mkdir -p $(BUILD)/keys && chmod 700 $(BUILD)/keys
	$(MEGAVISOR) keygen --out $(KEY)

$(BUNDLE)/manifest.json: $(MEGAVISOR) $(KEY) $(BUILD)/guest/megabin.wasm guest/megabin/entries.json
	$(MEGAVISOR) pack --wasm $(BUILD)/guest/megabin.wasm --entries guest/megabin/entries.json \
		--key $(KEY) --out $(BUNDLE) --name default

$(TEST_BUNDLE)/manifest.json: $(MEGAVISOR) $(KEY) $(BUILD)/guest/testbin.wasm guest/testbin/entries.json
	$(MEGAVISOR) pack --wasm $(BUILD)/guest/testbin.wasm --entries guest/testbin/entries.json \
		--key $(KEY) --out $(TEST_BUNDLE) --name test

demo: setup
	@echo '$$ megavisor run echo hello'
	@$(MEGAVISOR) run echo hello
	@echo '$$ printf "a\nb\nc\n" | megavisor run wc -l'
	@printf 'a\nb\nc\n' | $(MEGAVISOR) run wc -l
	@echo '$$ echo "{\"tool\":\"calc\",\"ok\":[1,2]}" | megavisor run jsonfmt'
	@echo '{"tool":"calc","ok":[1,2]}' | $(MEGAVISOR) run jsonfmt
	@echo '$$ megavisor run calc "2^10 + (3 * 4) / 8"'
	@$(MEGAVISOR) run calc '2^10 + (3 * 4) / 8'
	@echo '$$ printf "hello" | megavisor run sha256sum'
	@printf 'hello' | $(MEGAVISOR) run sha256sum
	@echo '$$ megavisor exec /usr/bin/wc -c   (the native wc, recognised by its hash)'
	@printf 'twelve bytes' | $(MEGAVISOR) exec /usr/bin/wc -c
	@echo '$$ megavisor exec /bin/ls          (not in the manifest: EACCES, exit 126)'
	@$(MEGAVISOR) exec /bin/ls; test $$? -eq 126
	@echo '$$ megavisor tools'
	@$(MEGAVISOR) tools

lint:
	cargo fmt --all -- --check
	cargo clippy --release --locked --workspace --all-targets -- -D warnings

rust-test: setup
	cargo test --release --locked --workspace

# The Python packages the tests use, in a virtualenv of their own.
$(VENV)/.installed: tests/grpc/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r tests/grpc/requirements.txt
	touch $@

# A Python client generated from proto/runtime/v1/driver.proto against a real supervisor.
grpc-test: setup $(VENV)/.installed
	MEGAVISOR=$(MEGAVISOR) $(VENV)/bin/python -m pytest -q tests/grpc

# libdriver (bindings-c): the C test and example, compiled with cc against include/driver.h.
LIBDIR := $(CARGO_TARGET_DIR)/release
C_FLAGS := -std=c11 -Wall -Wextra -Werror -pthread -Iinclude
C_LINK := -L$(LIBDIR) -ldriver -Wl,-rpath,$(LIBDIR)
c-test: setup
	cargo build --release --locked -p megavisor-c
	mkdir -p $(BUILD)/c
	$(CC) $(C_FLAGS) tests/c/test_driver.c $(C_LINK) -o $(BUILD)/c/test_driver
	command -v pkg-config >/dev/null || apt-get install -y pkg-config
	mkdir -p $(BUILD)/pkgconfig
	sed -e 's|@INCLUDEDIR@|$(CURDIR)/include|' -e 's|@LIBDIR@|$(LIBDIR)|' \
		-e 's|@VERSION@|0.1.0|' bindings-c/driver.pc.in > $(BUILD)/pkgconfig/driver.pc
	$(CC) -std=c11 -Wall -Wextra -Werror examples/c/hello.c \
		$$(PKG_CONFIG_PATH=$(BUILD)/pkgconfig pkg-config --cflags --libs driver) -o $(BUILD)/c/hello
	command -v valgrind >/dev/null || apt-get install -y valgrind
	sh tests/c/run.sh $(MEGAVISOR) $(BUILD)/c

# Regenerates include/driver.h from bindings-c/src/lib.rs (the tests fail when they differ).
header:
	MEGAVISOR_UPDATE_HEADER=1 cargo test --release --locked -p megavisor-c --test header

bench: setup
	bench/run

test: lint rust-test grpc-test c-test
	bench/run --quick > $(BUILD)/bench-quick.jsonl
	@echo "bench smoke run: $$(wc -l < $(BUILD)/bench-quick.jsonl) cases in $(BUILD)/bench-quick.jsonl"

clean:
	rm -rf $(BUILD)

FORCE:
