# The two entry points: `make run` (install what is missing, build, start the server on the embedded
# default) and `make test` (install what is missing, build, run every suite). CMake does the build.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build run test clean format

all: build

deps:
	scripts/deps.sh build

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

run: build
	$(BUILD)/autopgo server

test:
	scripts/test.sh

format:
	git ls-files --cached --others --exclude-standard 'core/*.[ch]' 'tests/*.[ch]' 'bench/*.[ch]' | xargs clang-format -i

clean:
	rm -rf $(BUILD) build-asan
