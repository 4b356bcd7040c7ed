#!/usr/bin/env bash
# Ceph RGW (a real S3 that verifies SigV4 signatures and payload hashes) for the S3 specs: a
# throwaway cluster of one monitor, one memstore OSD and radosgw, all on 127.0.0.1 with ports
# the kernel picked, plus an S3 user. Idempotent: `start` reuses a running instance.
#   usage: tests/services/rgw.sh start|stop|status|env
#   start/env print: AUTOPGO_TEST_S3_ENDPOINT=http://127.0.0.1:PORT, _ACCESS_KEY=..., _SECRET_KEY=...
# State (config, keyring, logs, PIDs) lives in build/services/rgw (AUTOPGO_SERVICES_DIR overrides).
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "$0")/lib.sh"

D=$(state_dir rgw)
ACCESS_KEY=AKAUTOPGOTEST
SECRET_KEY=SKautopgotestsecret

ready() { [ -f "$D/env" ] && curl -sf -o /dev/null "$(sed -n 's/^AUTOPGO_TEST_S3_ENDPOINT=//p' "$D/env")/"; }

print_env() { cat "$D/env"; }

stop() {
    stop_pids "$D/pids"
    rm -rf "$D"
}

start() {
    if pids_alive "$D/pids" && ready; then
        print_env
        return 0
    fi
    for bin in ceph-mon ceph-osd radosgw radosgw-admin ceph-authtool monmaptool ceph curl node; do
        command -v "$bin" >/dev/null || die "$bin is missing (scripts/deps.sh test installs radosgw, ceph-mon, ceph-osd)"
    done
    [ -f "$D/pids" ] && stop
    case "$D" in /*/services/rgw) ;; *) die "refusing to use state directory $D" ;; esac
    rm -rf "$D"
    mkdir -p "$D"/{mon.a,osd.0,log,run,rgw}
    local mon_port rgw_port osd_port fsid
    mon_port=$(free_port)
    rgw_port=$(free_port)
    osd_port=$(free_port)
    port_must_be_free "$mon_port"
    port_must_be_free "$rgw_port"
    fsid=$(cat /proc/sys/kernel/random/uuid)
    cat >"$D/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
mon initial members = a
public addr = 127.0.0.1
keyring = $D/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
run dir = $D/run
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
ms bind ipv6 = false
ms bind port min = $osd_port
ms bind port max = $((osd_port + 60))
[mon.a]
mon data = $D/mon.a
[osd.0]
osd data = $D/osd.0
osd objectstore = memstore
memstore device bytes = 1073741824
osd max object name len = 460
osd max object namespace len = 64
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $D/rgw
CONF
    export CEPH_CONF=$D/ceph.conf
    local u=(--setuser root --setgroup root)
    ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$D/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "$D/keyring" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null
    ceph-authtool "$D/keyring" --gen-key -n client.rgw.a --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
    monmaptool --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$D/monmap" >/dev/null
    ceph-mon --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring" "${u[@]}"
    ceph-mon -f -i a "${u[@]}" </dev/null >"$D/log/mon.out" 2>&1 &
    echo $! >>"$D/pids"
    wait_while_alive "$D/pids" 20 ceph -s --connect-timeout 2 || { tail -20 "$D/log/mon.out" >&2; die "ceph-mon did not come up"; }
    ceph osd create >/dev/null
    ceph-osd -i 0 --mkfs "${u[@]}" >"$D/log/osd-mkfs.out" 2>&1
    ceph osd crush add osd.0 1.0 root=default >/dev/null 2>&1
    ceph-osd -f -i 0 "${u[@]}" </dev/null >"$D/log/osd.out" 2>&1 &
    echo $! >>"$D/pids"
    osd_up() { ceph osd stat 2>/dev/null | grep -q '1 up'; }
    wait_while_alive "$D/pids" 30 osd_up || { tail -20 "$D/log/osd.out" >&2; die "ceph-osd did not come up"; }
    radosgw -f -n client.rgw.a "${u[@]}" </dev/null >"$D/log/rgw.out" 2>&1 &
    echo $! >>"$D/pids"
    cat >"$D/env" <<ENV
AUTOPGO_TEST_S3_ENDPOINT=http://127.0.0.1:$rgw_port
AUTOPGO_TEST_S3_ACCESS_KEY=$ACCESS_KEY
AUTOPGO_TEST_S3_SECRET_KEY=$SECRET_KEY
AUTOPGO_TEST_S3_REGION=us-east-1
ENV
    wait_while_alive "$D/pids" 60 ready || { tail -20 "$D/log/rgw.out" >&2; die "radosgw did not answer on 127.0.0.1:$rgw_port"; }
    radosgw-admin user create --uid=autopgo --display-name=autopgo \
        --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >"$D/log/user.out" 2>&1 ||
        { cat "$D/log/user.out" >&2; die "radosgw-admin user create failed"; }
    print_env
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) if pids_alive "$D/pids" && ready; then echo running; else echo stopped; exit 1; fi ;;
env) ready && print_env || die "not running (tests/services/rgw.sh start)" ;;
*) die "usage: $0 start|stop|status|env" ;;
esac
