#!/bin/sh
# mmdebstrap extract hook of deploy/image/build.sh: records the extracted packages, trims the tree
# to what the program needs, installs the payload and adds the non-root user (apt's and dpkg's
# own state is left to mmdebstrap's clean-up and filtered out of the tarball by build.sh).
# usage (by mmdebstrap): customize.sh ROOT autopgo|nats|goservice|list PAYLOAD_DIR
set -eu
root=$1
kind=$2
payload=$3

# The packages in the tree with their versions: kind "list" only writes them to
# PAYLOAD_DIR/packages (build.sh resolves a lock file this way); the images keep the list.
for deb in "$root"/var/cache/apt/archives/*.deb; do
    [ -e "$deb" ] || continue
    echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
done | LC_ALL=C sort >"$payload/packages"
[ "$kind" != list ] || exit 0
mkdir -p "$root/usr/share/autopgo-image"
cp "$payload/packages" "$root/usr/share/autopgo-image/packages"

# CA certificates: the bundle update-ca-certificates would write (it is not run on extraction).
mkdir -p "$root/etc/ssl/certs"
if [ -d "$root/usr/share/ca-certificates/mozilla" ]; then
    find "$root/usr/share/ca-certificates/mozilla" -name '*.crt' | LC_ALL=C sort | xargs cat \
        >"$root/etc/ssl/certs/ca-certificates.crt"
fi

# Nothing a program reads at run time: documentation (the copyright files stay), manual pages,
# translations, apt's and dpkg's state, and every executable but the image's own.
rm -rf "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/locale" "$root/usr/share/lintian" \
    "$root/usr/share/bug" "$root/usr/share/perl5" "$root/usr/share/debconf" "$root/usr/share/gdb" \
    "$root/usr/share/bash-completion" "$root/usr/share/pixmaps" "$root/usr/share/gcc" \
    "$root/usr/share/ca-certificates" "$root/usr/lib/ssl/misc" "$root/etc/ca-certificates" \
    "$root/etc/debconf.conf" "$root/etc/ld.so.conf.d"
find "$root/usr/share/doc" -type f ! -name copyright -delete 2>/dev/null || true
find "$root/usr/share/doc" -depth -type d -empty -delete 2>/dev/null || true
for d in bin sbin usr/bin usr/sbin; do
    [ -d "$root/$d" ] && [ ! -L "$root/$d" ] || continue
    find "$root/$d" -mindepth 1 ! -path "$root/usr/sbin/nats-server" -delete
done

case "$kind" in
autopgo) install -D -m 0755 "$payload/autopgo" "$root/usr/bin/autopgo" ;;
goservice) install -D -m 0755 "$payload/goservice" "$root/usr/bin/goservice" ;;
esac

# The user every image runs as (65532, "nonroot" in distroless images), its writable places, and
# name resolution by /etc/hosts then DNS.
mkdir -p "$root/etc" "$root/tmp" "$root/var/lib/autopgo/store" "$root/data"
printf 'root:x:0:0:root:/root:/sbin/nologin\nautopgo:x:65532:65532:autopgo:/var/lib/autopgo:/sbin/nologin\n' \
    >"$root/etc/passwd"
printf 'root:x:0:\nautopgo:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"
chown -R 65532:65532 "$root/var/lib/autopgo" "$root/data"
