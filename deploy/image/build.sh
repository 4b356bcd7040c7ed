#!/usr/bin/env bash
# Builds autopgo's container images from Debian packages, with no registry: mmdebstrap extracts the
# pinned packages into a tree, customize.sh trims it, `docker import` turns the tarball into an image.
# usage: deploy/image/build.sh [--tar FILE] autopgo|nats|goservice
#   autopgo    autopgo:<version> and autopgo:latest: build/autopgo (stripped) on the shared libraries
#              it links against, pinned to the versions installed here, plus CA certificates
#   nats       autopgo-nats:<version>: Debian's nats-server, JetStream on, data in /data
#   goservice  autopgo-goservice:latest: tests/goservice built statically with Go 1.23 (the sample)
#   --tar FILE only write the root filesystem tarball (to check it is reproducible); no Docker
# Each image carries the label org.autopgo.inputs, the hash of everything it is built from, and is
# reused when an image with that label exists. Environment: DOCKER (client, default docker),
# AUTOPGO_BIN (default build/autopgo), AUTOPGO_APT_SOURCES (default: this machine's apt sources),
# SOURCE_DATE_EPOCH (default: the time of the last commit that changed deploy/image).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tar_only=
if [ "${1:-}" = --tar ]; then
    tar_only=${2:?--tar needs a file}
    shift 2
fi
kind=${1:?usage: build.sh [--tar FILE] autopgo|nats|goservice}
docker=${DOCKER:-docker}
suite=bookworm
work="$root/build/image"
mkdir -p "$work"

# Where packages come from: the apt sources of this machine (a deb822 or one-line file), so the
# tree gets the versions the binary was built against; AUTOPGO_APT_SOURCES names another file.
sources=${AUTOPGO_APT_SOURCES:-}
if [ -z "$sources" ]; then
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
        if [ -s "$f" ] && grep -qE '^(deb |Types:)' "$f"; then
            sources=$f
            break
        fi
    done
fi
[ -n "$sources" ] || { echo "build.sh: no apt sources found; set AUTOPGO_APT_SOURCES" >&2; exit 1; }

# the time of the last commit that changed deploy/image (so other commits keep the cache)
epoch=$(git -C "$root" log -1 --format=%ct -- deploy/image 2>/dev/null || true)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-${epoch:-1700000000}}

# The packages holding the shared libraries a binary loads (ldd, then one dpkg -S for them all,
# by the path ldd gives and by the real path, since /lib and /usr/lib may both be named).
lib_packages() {
    local libs=() paths=() lib owned
    mapfile -t libs < <(ldd "$1" | awk '/=>/ {print $3} /ld-linux/ {print $1}')
    for lib in "${libs[@]}"; do paths+=("$lib" "$(readlink -f "$lib")"); done
    owned=$(dpkg -S "${paths[@]}" 2>/dev/null | grep -v '^diversion' || true)
    for lib in "${libs[@]}"; do
        grep -qE ": ($lib|$(readlink -f "$lib"))\$" <<<"$owned" ||
            { echo "build.sh: no Debian package holds $lib" >&2; return 1; }
    done
    cut -d: -f1 <<<"$owned" | tr ',' '\n' | tr -d ' ' | sort -u
}

payload="$work/$kind.payload"
rm -rf "$payload"
mkdir -p "$payload"
changes=()
case "$kind" in
autopgo)
    bin=${AUTOPGO_BIN:-$root/build/autopgo}
    [ -x "$bin" ] || { echo "build.sh: $bin is missing (build first: make build)" >&2; exit 1; }
    version=$("$bin" --version | awk '{print $2}')
    image="autopgo:$version"
    extra_tags=(autopgo:latest)
    mapfile -t roots < <(lib_packages "$bin")
    [ ${#roots[@]} -gt 0 ] || exit 1
    roots+=(ca-certificates)
    strip --strip-unneeded -o "$payload/autopgo" "$bin"
    changes=('ENTRYPOINT ["/usr/bin/autopgo"]' 'CMD ["--help"]' 'WORKDIR /var/lib/autopgo'
        'EXPOSE 8080')
    ;;
nats)
    version=$(dpkg-query -W -f='${Version}' nats-server | sed 's/[^A-Za-z0-9_.-]/_/g')
    image="autopgo-nats:$version"
    extra_tags=(autopgo-nats:latest)
    roots=(nats-server)
    changes=('ENTRYPOINT ["/usr/sbin/nats-server"]' 'CMD ["--jetstream", "--store_dir", "/data"]'
        'WORKDIR /data' 'EXPOSE 4222')
    ;;
goservice)
    go=${AUTOPGO_GO:-/usr/lib/go-1.23/bin/go}
    (cd "$root/tests/goservice" && CGO_ENABLED=0 GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-trimpath \
        GO111MODULE=on GOCACHE="$root/build/go/cache" GOPATH="$root/build/go/path" \
        "$go" build -ldflags=-buildid= -o "$payload/goservice" .)
    version=latest
    image="autopgo-goservice:latest"
    extra_tags=()
    roots=(netbase)
    changes=('ENTRYPOINT ["/usr/bin/goservice"]' 'CMD ["-addr", "0.0.0.0:6060"]' 'EXPOSE 6060')
    ;;
*)
    echo "build.sh: unknown image $kind (autopgo, nats or goservice)" >&2
    exit 2
    ;;
esac
changes+=('USER 65532:65532' "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")

# The pins: deploy/image/KIND.lock lists every package of the tree with its exact version. It is
# made (or made again) by resolving the roots against the apt sources when it is missing, lacks a
# root, or (with AUTOPGO_IMAGE_REPIN=1) when the pinned versions cannot be fetched (Debian replaces
# a stable package's version with each security or point release).
lock="$here/$kind.lock"
resolve() {
    echo "build.sh: resolving the packages of $kind into $lock" >&2
    local tmp="$work/$kind.resolve"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    mmdebstrap --quiet --variant=extract --include="$(IFS=,; echo "${roots[*]}")" \
        --extract-hook="'$here/customize.sh' \"\$1\" list '$tmp'" \
        "$suite" /dev/null "$sources" >"$work/$kind.resolve.log" 2>&1 ||
        { tail -20 "$work/$kind.resolve.log" >&2; return 1; }
    {
        echo "# $kind image: every package of the tree, pinned (deploy/image/build.sh made this; roots: ${roots[*]})"
        cat "$tmp/packages"
    } >"$lock"
}
lock_ok() {
    [ -s "$lock" ] || return 1
    local r
    for r in "${roots[@]}"; do grep -q "^$r " "$lock" || return 1; done
}
lock_ok || resolve
pkgs=()
while read -r p v; do pkgs+=("$p=$v"); done < <(grep -v '^#' "$lock")

# The hash of every input: the pins, the payload, these scripts, the suite and the epoch.
hash_inputs() {
    {
        printf '%s\n' "$kind" "$suite" "$SOURCE_DATE_EPOCH" "${pkgs[@]}" "${changes[@]}"
        cat "$here/build.sh" "$here/customize.sh"
        (cd "$payload" && find . -type f ! -name packages | sort | xargs -r sha256sum)
    } | sha256sum | cut -c1-32
}
inputs=$(hash_inputs)

if [ -z "$tar_only" ]; then
    cached=$("$docker" images -q --filter "label=org.autopgo.inputs=$inputs" | head -n1)
    if [ -n "$cached" ]; then
        for t in "$image" "${extra_tags[@]}"; do "$docker" tag "$cached" "$t"; done
        echo "$image (cached, inputs $inputs)"
        exit 0
    fi
fi

tarball=${tar_only:-$work/$kind.tar}
# extract: exactly the pinned packages, unpacked without maintainer scripts; the state apt, dpkg
# and mmdebstrap leave (and the host's hostname and resolv.conf) is filtered out of the tarball
drop=()
for p in /etc/apt /var/lib/apt /var/cache /var/lib/dpkg /var/log /etc/dpkg /etc/hostname \
    /etc/resolv.conf /etc/fstab /dev; do
    drop+=("--path-exclude=$p" "--path-exclude=$p/*")
done
extract() {
    mmdebstrap --quiet --variant=extract --include="$(IFS=,; echo "${pkgs[*]}")" \
        --extract-hook="'$here/customize.sh' \"\$1\" '$kind' '$payload'" \
        "$suite" - "$sources" 2>"$work/$kind.mmdebstrap.log" |
        mmtarfilter "${drop[@]}" >"$tarball" 2>>"$work/$kind.mmdebstrap.log"
}
if ! extract; then
    # (mmdebstrap does not say why apt failed; a lock whose versions are gone is the usual cause)
    if [ "${AUTOPGO_IMAGE_REPIN:-0}" = 1 ]; then
        echo "build.sh: the packages pinned by $lock could not be fetched; pinning again" >&2
        resolve
        pkgs=()
        while read -r p v; do pkgs+=("$p=$v"); done < <(grep -v '^#' "$lock")
        extract || { tail -20 "$work/$kind.mmdebstrap.log" >&2; exit 1; }
        inputs=$(hash_inputs)
    else
        tail -20 "$work/$kind.mmdebstrap.log" >&2
        echo "build.sh: could not extract the pinned packages of $lock (AUTOPGO_IMAGE_REPIN=1 pins them again)" >&2
        exit 1
    fi
fi
[ -z "$tar_only" ] || { echo "$tarball"; exit 0; }

args=()
for c in "${changes[@]}" "LABEL org.autopgo.inputs=$inputs" "LABEL org.opencontainers.image.version=$version"; do
    args+=(--change "$c")
done
old=$("$docker" images -q "$image")
"$docker" import "${args[@]}" "$tarball" "$image" >/dev/null
for t in "${extra_tags[@]}"; do "$docker" tag "$image" "$t"; done
# the image this one replaces goes, unless something still uses or names it
[ -z "$old" ] || "$docker" rmi "$old" >/dev/null 2>&1 || true
rm -f "$tarball"
echo "$image (built, inputs $inputs, $("$docker" image inspect -f '{{.Size}}' "$image") bytes)"
