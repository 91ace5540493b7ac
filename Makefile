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
DATA_LINK  := $(CARGO_TARGET_DIR)/share/megavisor
PYTHON     ?= python3
VENV       := $(BUILD)/venv

PY_PACKAGE   := bindings-python/python/megavisor
NODE_PACKAGE := bindings-node
NODE_BUILD   := $(BUILD)/node

.PHONY: setup demo test lint jq-peer rust-test image-test containerd-deps containerd-test kubernetes-test grpc-test grpc-go-test python-test node-test c-test header bench \
	bench-deps soak fuzz fuzz-seeds stage-bundle install install-test c-lib python-install python-venv-package node-package \
	node-consumer clean

# Everything the demo, the tests and the README's examples need, including the `megavisor`
# Python package installed into $(PYTHON) and the Node package ready to `npm install`.
setup: $(BUNDLE)/manifest.json $(TEST_BUNDLE)/manifest.json $(DATA_LINK) python-install node-package

$(BUILD)/.ziglang:
	$(PYTHON) -m ziglang version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet ziglang
	mkdir -p $(BUILD) && touch $@

$(BUILD)/guest/megabin.wasm $(BUILD)/guest/js.wasm $(BUILD)/guest/python.wasm $(BUILD)/guest/jq.wasm $(BUILD)/guest/sqlite.wasm $(BUILD)/guest/testbin.wasm $(BUILD)/guest/reactor.wasm &: $(BUILD)/.ziglang FORCE
	sh guest/build.sh $(BUILD)/guest

$(MEGAVISOR): FORCE
	cargo build --release --locked -p megavisor -p megavisor-jail -p megavisor-shim -p megavisor-bench

$(KEY): | $(MEGAVISOR)
	mkdir -p $(BUILD)/keys && chmod 700 $(BUILD)/keys
	$(MEGAVISOR) keygen --out $(KEY)

# The default bundle: the C tools, JavaScript and Python pre-initialized, jq in Go, SQLite.
$(BUNDLE)/manifest.json: $(MEGAVISOR) $(KEY) $(BUILD)/guest/megabin.wasm $(BUILD)/guest/js.wasm \
		$(BUILD)/guest/python.wasm $(BUILD)/guest/jq.wasm $(BUILD)/guest/sqlite.wasm \
		guest/megabin/entries.json guest/js/entries.json guest/python/entries.json \
		guest/jq/entries.json guest/sqlite/entries.json
	$(MEGAVISOR) pack --module $(BUILD)/guest/megabin.wasm:guest/megabin/entries.json \
		--module $(BUILD)/guest/js.wasm:guest/js/entries.json \
		--module $(BUILD)/guest/python.wasm:guest/python/entries.json \
		--module $(BUILD)/guest/jq.wasm:guest/jq/entries.json \
		--module $(BUILD)/guest/sqlite.wasm:guest/sqlite/entries.json \
		--key $(KEY) --out $(BUNDLE) --name default

# The test bundle holds three modules: the busybox-style test tools, and one reactor
# packed twice, as is and pre-initialized.
$(TEST_BUNDLE)/manifest.json: $(MEGAVISOR) $(KEY) $(BUILD)/guest/testbin.wasm $(BUILD)/guest/reactor.wasm \
		guest/testbin/entries.json guest/reactor/entries.json guest/reactor/preinit.json
	$(MEGAVISOR) pack --module $(BUILD)/guest/testbin.wasm:guest/testbin/entries.json \
		--module $(BUILD)/guest/reactor.wasm:guest/reactor/entries.json \
		--module $(BUILD)/guest/reactor.wasm:guest/reactor/preinit.json \
		--key $(KEY) --out $(TEST_BUNDLE) --name test

# A program built here finds the checkout's bundle and key where an installed one finds its
# own: in ../share/megavisor beside it (driver/src/data.rs).
$(DATA_LINK): $(BUNDLE)/manifest.json
	mkdir -p $@
	ln -sfn $(BUNDLE) $@/bundle
	ln -sfn $(KEY).pub $@/megavisor.pub

# The default bundle and the key that signed it, inside both packages (gitignored there):
# they ship with the package, so `embedded()` needs nothing else.
stage-bundle: $(BUNDLE)/manifest.json
	for pkg in $(PY_PACKAGE) $(NODE_PACKAGE); do \
		rm -rf $$pkg/bundle && cp -r $(BUNDLE) $$pkg/bundle && cp $(KEY).pub $$pkg/bundle.pub; \
	done

# pip builds the extension with maturin (into this same target directory) and installs it.
python-install: stage-bundle
	$(PYTHON) -m pip install --quiet --disable-pip-version-check ./bindings-python

# The addon, stripped of debug info, beside the package's JavaScript.
node-package: stage-bundle
	cargo build --release --locked -p megavisor-node
	strip --strip-debug -o $(NODE_PACKAGE)/megavisor.node $(CARGO_TARGET_DIR)/release/libmegavisor_node.so

demo: setup c-lib
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
	@echo '$$ megavisor run js --params '"'"'{"code": "[1,2,3].map(x => x * 2)"}'"'"
	@$(MEGAVISOR) run js --params '{"code": "[1,2,3].map(x => x * 2)"}'
	@echo '$$ megavisor run python --params '"'"'{"code": "import statistics; print(statistics.mean([1,2,3]))"}'"'"
	@$(MEGAVISOR) run python --params '{"code": "import statistics; print(statistics.mean([1,2,3]))"}'
	@echo '$$ megavisor exec /usr/bin/wc -c   (the native wc, recognised by its hash)'
	@printf 'twelve bytes' | $(MEGAVISOR) exec /usr/bin/wc -c
	@echo '$$ megavisor exec /bin/ls          (not in the manifest: EACCES, exit 126)'
	@$(MEGAVISOR) exec /bin/ls; test $$? -eq 126
	@echo '$$ megavisor tools'
	@$(MEGAVISOR) tools
	@echo '$$ python3 -c "import megavisor; print(megavisor.embedded().run(\"echo\", [\"hi from Python\"]).stdout)"'
	@cd /tmp && $(PYTHON) -c 'import megavisor; print(megavisor.embedded().run("echo", ["hi from Python"]).stdout)'
	@echo '$$ node -e "require(\"megavisor\").embedded().run(\"echo\", [\"hi from Node\"]).then(r => process.stdout.write(r.stdout))"'
	@cd $(NODE_PACKAGE) && node -e 'require(".").embedded().run("echo", ["hi from Node"]).then(r => process.stdout.write(r.stdout))'
	@echo '$$ export PKG_CONFIG_PATH=$(BUILD)/pkgconfig'
	@echo '$$ cc examples/c/hello.c $$(pkg-config --cflags --libs driver) -o build/c/hello && build/c/hello'
	@mkdir -p $(BUILD)/c && cc examples/c/hello.c \
		$$(PKG_CONFIG_PATH=$(BUILD)/pkgconfig pkg-config --cflags --libs driver) -o $(BUILD)/c/hello
	@$(BUILD)/c/hello

lint:
	cargo fmt --all -- --check
	cargo clippy --release --locked --workspace --all-targets -- -D warnings
	$(PYTHON) workspace-hack/check.py

# Debian's jq, the peer of the jq tool's golden cases.
jq-peer:
	command -v jq >/dev/null || apt-get install -y jq

rust-test: setup jq-peer
	cargo test --release --locked --workspace

# The Python packages the tests and benchmarks use, in a virtualenv of their own.
PY_REQUIREMENTS := tests/grpc/requirements.txt bindings-python/tests/requirements.txt \
	bench/python/requirements.txt
$(VENV)/.installed: $(PY_REQUIREMENTS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(addprefix -r ,$(PY_REQUIREMENTS))
	touch $@

# The `megavisor` package installed into the virtualenv the way users install it.
python-venv-package: stage-bundle $(VENV)/.installed
	$(VENV)/bin/pip install --quiet --disable-pip-version-check ./bindings-python

# The Python package, embedded and connected, its error kinds and the LangGraph adapter.
python-test: setup python-venv-package
	cd bindings-python/tests && MEGAVISOR=$(MEGAVISOR) $(VENV)/bin/python -m pytest -q

# The Node package packed and installed into a project of its own, as users install it,
# with LangChain.js, LangGraph.js and TypeScript beside it.
node-consumer: node-package
	mkdir -p $(NODE_BUILD)/consumer
	rm -f $(NODE_BUILD)/megavisor-*.tgz
	cd $(NODE_PACKAGE) && npm pack --silent --pack-destination $(NODE_BUILD) > /dev/null
	cp $(NODE_PACKAGE)/test/consumer.json $(NODE_BUILD)/consumer/package.json
	rm -rf $(NODE_BUILD)/consumer/node_modules/megavisor $(NODE_BUILD)/consumer/package-lock.json
	cd $(NODE_BUILD)/consumer && npm install --silent --no-audit --no-fund

node-test: setup node-consumer
	rm -rf $(NODE_BUILD)/consumer/test && cp -r $(NODE_PACKAGE)/test $(NODE_BUILD)/consumer/test
	cd $(NODE_BUILD)/consumer && npx tsc -p test/tsconfig.json
	cd $(NODE_BUILD)/consumer && MEGAVISOR_ROOT=$(CURDIR) MEGAVISOR=$(MEGAVISOR) \
		node --test test/

# A Python client generated from proto/runtime/v1/driver.proto against a real supervisor.
grpc-test: setup $(VENV)/.installed
	MEGAVISOR=$(MEGAVISOR) $(VENV)/bin/python -m pytest -q tests/grpc

# containerd and runc from Debian's packages, crictl from the Go module proxy: the real
# components the shim is tested against.
CRICTL_VERSION := v1.37.0
containerd-deps:
	command -v containerd >/dev/null && command -v runc >/dev/null || apt-get install -y containerd runc
	test -x /bin/busybox || apt-get install -y busybox-static
	test -x $(GOBIN)/crictl || go install sigs.k8s.io/cri-tools/cmd/crictl@$(CRICTL_VERSION)

# The shim under a private containerd: ctr run, kill, the CRI with a megavisor runtime
# handler driven by crictl, and the fast path through a supervisor.
containerd-test: setup containerd-deps $(VENV)/.installed
	GOBIN=$(GOBIN) MEGAVISOR=$(MEGAVISOR) $(VENV)/bin/python -m pytest -q -rs tests/containerd

# deploy/kubernetes decoded strictly into the Kubernetes API types (k8s.io/api and
# sigs.k8s.io/yaml from the Go module proxy, pinned by tests/kubernetes/go.sum).
kubernetes-test:
	cd tests/kubernetes && MEGAVISOR_ROOT=$(CURDIR) go test -count=1 ./...

# recompile and run-image on images the tests build themselves (tests/image/build_image.py).
image-test: setup $(VENV)/.installed
	test -x /bin/busybox || apt-get install -y busybox-static
	MEGAVISOR=$(MEGAVISOR) $(VENV)/bin/python -m pytest -q -rs tests/image

# The same API from Go: a grpc-go client generated from the .proto (protoc from Debian's
# packages, protoc-gen-go and protoc-gen-go-grpc from the Go module proxy) against a real
# supervisor.
GOBIN := $(shell go env GOPATH)/bin
GRPC_GO := tests/grpc-go
GO_PROTO := Mruntime/v1/driver.proto=megavisor.test/grpcgo/runtimev1,module=megavisor.test/grpcgo
grpc-go-test: setup
	command -v protoc >/dev/null || apt-get install -y protobuf-compiler
	test -x $(GOBIN)/protoc-gen-go || go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	test -x $(GOBIN)/protoc-gen-go-grpc || \
		go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
	PATH=$(GOBIN):$$PATH protoc -Iproto --go_out=$(GRPC_GO) --go_opt=$(GO_PROTO) \
		--go-grpc_out=$(GRPC_GO) --go-grpc_opt=$(GO_PROTO) proto/runtime/v1/driver.proto
	cd $(GRPC_GO) && MEGAVISOR_ROOT=$(CURDIR) MEGAVISOR=$(MEGAVISOR) go test -count=1 ./...

# libdriver (bindings-c): the C test and example, compiled with cc against include/driver.h.
LIBDIR := $(CARGO_TARGET_DIR)/release
C_FLAGS := -std=c11 -Wall -Wextra -Werror -pthread -Iinclude
C_LINK := -L$(LIBDIR) -ldriver -Wl,-rpath,$(LIBDIR)
# libdriver, and its pkg-config file for this checkout (build/pkgconfig/driver.pc).
c-lib: setup
	cargo build --release --locked -p megavisor-c
	command -v pkg-config >/dev/null || apt-get install -y pkg-config
	mkdir -p $(BUILD)/pkgconfig
	sed -e 's|@INCLUDEDIR@|$(CURDIR)/include|' -e 's|@LIBDIR@|$(LIBDIR)|' \
		-e 's|@VERSION@|0.1.0|' bindings-c/driver.pc.in > $(BUILD)/pkgconfig/driver.pc

c-test: c-lib
	mkdir -p $(BUILD)/c
	$(CC) $(C_FLAGS) tests/c/test_driver.c $(C_LINK) -o $(BUILD)/c/test_driver
	$(CC) $(C_FLAGS) tests/c/test_errors.c $(C_LINK) -o $(BUILD)/c/test_errors
	$(CC) -std=c11 -Wall -Wextra -Werror examples/c/hello.c \
		$$(PKG_CONFIG_PATH=$(BUILD)/pkgconfig pkg-config --cflags --libs driver) -o $(BUILD)/c/hello
	command -v valgrind >/dev/null || apt-get install -y valgrind
	sh tests/c/run.sh $(MEGAVISOR) $(BUILD)/c $(BUILD)

# Regenerates include/driver.h from bindings-c/src/lib.rs (the tests fail when they differ).
header:
	MEGAVISOR_UPDATE_HEADER=1 cargo test --release --locked -p megavisor-c --test header

# What bench/run needs beside the Rust build: the Python and Node packages installed with
# their peers (wasmtime-py; node:wasi is built in).
bench-deps: setup python-venv-package node-consumer

bench: bench-deps
	bench/run

# 8 client processes (Rust, Python, Node), 10 million mixed calls, every reply checked.
SOAK_CALLS ?= 10000000
soak: bench-deps
	bench/soak --calls $(SOAK_CALLS)

# The fuzz targets of fuzz/ (cargo fuzz, nightly), each for FUZZ_SECONDS, from the seed
# corpora in fuzz/corpus (new inputs go to build/fuzz/corpus; crashes to fuzz/artifacts).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := manifest arguments frame ring grpc_request allowlist
fuzz: setup
	command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	for target in $(FUZZ_TARGETS); do \
		mkdir -p $(BUILD)/fuzz/corpus/$$target && \
		CARGO_TARGET_DIR=$(CURDIR)/fuzz/target cargo +nightly fuzz run --fuzz-dir fuzz -O \
			$$target $(BUILD)/fuzz/corpus/$$target fuzz/corpus/$$target \
			-- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

# Rewrites the seed corpora from the bundles, entries files and schemas (committed).
fuzz-seeds: setup $(VENV)/.installed
	$(VENV)/bin/python fuzz/make_seeds.py

# The CLI, the jailer, libdriver (stripped), driver.h, driver.pc and the default bundle with
# its key, under PREFIX. Installed programs find the bundle in PREFIX/share/megavisor at run
# time (driver/src/data.rs); nothing points back into this checkout.
PREFIX ?= /usr/local
install: $(BUNDLE)/manifest.json
	cargo build --release --locked -p megavisor -p megavisor-jail -p megavisor-shim -p megavisor-c
	install -d $(PREFIX)/bin $(PREFIX)/lib/pkgconfig $(PREFIX)/include $(PREFIX)/share/megavisor
	install -m 755 -s $(CARGO_TARGET_DIR)/release/megavisor $(CARGO_TARGET_DIR)/release/megavisor-jail \
		$(CARGO_TARGET_DIR)/release/containerd-shim-megavisor-v1 $(PREFIX)/bin/
	install -m 755 $(CARGO_TARGET_DIR)/release/libdriver.so $(PREFIX)/lib/
	strip --strip-unneeded $(PREFIX)/lib/libdriver.so
	install -m 644 include/driver.h $(PREFIX)/include/
	sed -e 's|@INCLUDEDIR@|$(PREFIX)/include|' -e 's|@LIBDIR@|$(PREFIX)/lib|' \
		-e 's|@VERSION@|0.1.0|' bindings-c/driver.pc.in > $(PREFIX)/lib/pkgconfig/driver.pc
	rm -rf $(PREFIX)/share/megavisor/bundle
	cp -r $(BUNDLE) $(PREFIX)/share/megavisor/bundle
	install -m 644 $(KEY).pub $(PREFIX)/share/megavisor/megavisor.pub

# Installs into a temporary prefix and runs a tool from the installed CLI and from a C
# program built as the README says, with this checkout's build/ and target/ out of reach.
install-test: setup
	sh tests/install/run.sh

test: lint rust-test grpc-test grpc-go-test python-test node-test c-test image-test containerd-test kubernetes-test install-test
	bench/run --quick > $(BUILD)/bench-quick.jsonl
	@echo "bench smoke run: $$(wc -l < $(BUILD)/bench-quick.jsonl) cases in $(BUILD)/bench-quick.jsonl"
	bench/soak --calls 200000 --window-ms 1000 > $(BUILD)/soak-quick.jsonl
	@tail -1 $(BUILD)/soak-quick.jsonl

clean:
	rm -rf $(BUILD)

FORCE:
