# The two entry points: `make run` (install what is missing, build, start the server on the embedded
# default) and `make test` (install what is missing, build, run every suite). CMake does the build;
# `make image` builds the container image.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build run test clean format image images

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
