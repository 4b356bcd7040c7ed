# The two entry points: `make run` (install what is missing, build the autopgo binary, start the
# server on the embedded default) and `make test` (install what is missing, build everything, run
# every suite). CMake does the build; `make build` builds everything (tests included);
# `make image` builds the container image.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps configure build binary run test clean format image images

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

# The container image autopgo:<version> (deploy/image/build.sh: Debian packages, mmdebstrap, docker
# import; needs a Docker engine); `make images` adds the NATS and sample-service images of the
# compose stack (deploy/compose).
image: build
	scripts/deps.sh deploy
	deploy/image/build.sh autopgo

images: image
	deploy/image/build.sh nats
	deploy/image/build.sh goservice

format:
	git ls-files --cached --others --exclude-standard 'core/*.[ch]' 'tests/*.[ch]' 'bench/*.[ch]' | xargs clang-format -i

clean:
	rm -rf $(BUILD) build-asan
