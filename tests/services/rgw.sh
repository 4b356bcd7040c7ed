#!/usr/bin/env bash
# Ceph RGW (a real S3 that verifies SigV4 signatures and payload hashes) for the S3 specs: a
# throwaway cluster of one monitor, one memstore OSD and radosgw, all on 127.0.0.1 with ports
# the kernel picked, plus an S3 user. About 14 s to start.
#   usage: tests/services/rgw.sh start|stop|status|env|check   (the verbs: tests/services/lib.sh)
#   prints AUTOPGO_TEST_S3_ENDPOINT=http://127.0.0.1:PORT, _ACCESS_KEY, _SECRET_KEY and _REGION
set -euo pipefail
# shellcheck source=tests/services/lib.sh
. "$(dirname "$0")/lib.sh"

ACCESS_KEY=AKAUTOPGOTEST
SECRET_KEY=SKautopgotestsecret
READY_SECONDS=60

check() { need ceph-mon ceph-osd radosgw radosgw-admin ceph-authtool monmaptool ceph curl node; }

ready() { curl -sf -o /dev/null -m 5 "$(env_value AUTOPGO_TEST_S3_ENDPOINT)/"; }

osd_up() { ceph osd stat 2>/dev/null | grep -q '1 up'; }

launch() {
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
    spawn log/mon.out ceph-mon -f -i a "${u[@]}"
    await 20 ceph-mon ceph -s --connect-timeout 2
    ceph osd create >/dev/null
    ceph-osd -i 0 --mkfs "${u[@]}" >"$D/log/osd-mkfs.out" 2>&1
    ceph osd crush add osd.0 1.0 root=default >/dev/null 2>&1
    spawn log/osd.out ceph-osd -f -i 0 "${u[@]}"
    await 30 ceph-osd osd_up
    spawn log/rgw.out radosgw -f -n client.rgw.a "${u[@]}"
    put_env "AUTOPGO_TEST_S3_ENDPOINT=http://127.0.0.1:$rgw_port" "AUTOPGO_TEST_S3_ACCESS_KEY=$ACCESS_KEY" \
        "AUTOPGO_TEST_S3_SECRET_KEY=$SECRET_KEY" AUTOPGO_TEST_S3_REGION=us-east-1
    await 60 radosgw ready
    radosgw-admin user create --uid=autopgo --display-name=autopgo \
        --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >"$D/log/user.out" 2>&1 ||
        die "radosgw-admin user create failed: $(cat "$D/log/user.out")"
}

service_main "$@"
