# agenthub: the two commands are `make run` and `make test`; see README.md.
# Everything builds through CMake into build/ (build-asan/, build-fuzz/ for the variants).

BUILD      ?= build
JOBS       ?= $(shell nproc)
CONFIG     ?= examples/agenthub.yaml
CMAKE_ARGS ?=

.PHONY: all build run test unit integration cli-tests deps deps-test asan fuzz lint format bench clean

all: build

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) $(CMAKE_ARGS) >/dev/null

build: deps $(BUILD)/Makefile
	@cmake --build $(BUILD) -j $(JOBS)

# Builds, creates ./data, starts the hub on the example config with the in-process mock model.
run: build
	@mkdir -p data
	@scripts/run.sh $(BUILD)/agenthub $(CONFIG)

# Every suite: lint, unit (cmocka), CLI checks, integration (node:test, real binary).
test: deps-test build
	@scripts/test.sh $(BUILD)

unit: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# ASan + UBSan build running the same suites.
asan: deps-test
	@$(MAKE) --no-print-directory build BUILD=build-asan CMAKE_ARGS="-DAH_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug"
	@AH_ASAN=1 scripts/test.sh build-asan

# libFuzzer targets (clang). FUZZ_SECONDS per target, default 60.
fuzz: deps-test
	@cmake -S . -B build-fuzz -DAH_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@scripts/fuzz.sh build-fuzz $${FUZZ_SECONDS:-60}

lint:
	@scripts/lint.sh

format:
	@git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' | xargs clang-format -i

bench: build
	@scripts/deps.sh bench
	@bash bench/http.sh

clean:
	rm -rf build build-asan build-fuzz
