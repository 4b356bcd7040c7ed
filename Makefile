# The two entry points: `make run` (install what is missing, build the autopgo binary, start the
# server on the embedded default) and `make test` (install what is missing, build everything, run
# every suite). CMake does the build; `make build` builds everything (tests included).
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps configure build binary run test clean format

all: build

deps:
	@echo "make: checking build dependencies (scripts/deps.sh build; the first time it installs them with apt)"
	scripts/deps.sh build

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: configure
	cmake --build $(BUILD) -j$(JOBS)

# Only what `make run` runs: the host binary and what it links, not the C test programs.
binary: configure
	cmake --build $(BUILD) -j$(JOBS) --target autopgo

run: binary
	$(BUILD)/autopgo server

test:
	scripts/test.sh

format:
	git ls-files --cached --others --exclude-standard 'core/*.[ch]' 'tests/*.[ch]' 'bench/*.[ch]' | xargs clang-format -i

clean:
	rm -rf $(BUILD) build-asan
