#!/bin/sh
# Print the path of a cached Debian 12 root file system tarball for the e2e
# test, building it with mmdebstrap first if it is missing.
#
# The cache key is a hash of everything that shapes the tarball (this file's
# package list, suite, mirrors), so changing the list rebuilds it. Set
# ZEUSD_E2E_CACHE to move the cache (default /var/cache/zeusd-e2e) and
# ZEUSD_E2E_REFRESH=1 to rebuild anyway. Concurrent callers wait on a lock.
set -eu

cache=${ZEUSD_E2E_CACHE:-/var/cache/zeusd-e2e}
mirror=${ZEUSD_E2E_MIRROR:-http://deb.debian.org/debian}
security=${ZEUSD_E2E_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
suite=bookworm
# The zeusd package's dependencies (so the .deb installs with no network),
# what boots and drives the container, and man-db for systemd-analyze verify's
# check of Documentation=man:zeusd(8).
packages="systemd,systemd-sysv,dbus,libpam-systemd,python3-minimal,python3,python3-falcon,python3-jwt,python3-prometheus-client,python3-waitress,python3-systemd,adduser,passwd,procps,curl,iproute2,util-linux,man-db,ca-certificates"

key=$(printf '%s\n' 1 "$suite" "$mirror" "$security" "$packages" | sha256sum | cut -c1-16)
tarball="$cache/rootfs-$suite-$key.tar"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -w 1800 9 || { echo "rootfs: could not lock $cache/.lock within 30 min" >&2; exit 1; }

if [ -s "$tarball" ] && [ "${ZEUSD_E2E_REFRESH:-0}" != 1 ]; then
    echo "$tarball"
    exit 0
fi

command -v mmdebstrap >/dev/null || { echo "rootfs: mmdebstrap is missing; run .ci/e2e-deps.sh" >&2; exit 1; }
echo "rootfs: building $tarball with mmdebstrap (a few minutes, once)" >&2
start=$(date +%s)
tmp="$cache/.building-$$.tar"
trap 'rm -f "$tmp"' EXIT
# Debian's own tools only (a pyenv python first in PATH confuses nothing here,
# but keep the build independent of the caller's environment).
PATH=/usr/sbin:/usr/bin:/sbin:/bin timeout 1500 mmdebstrap --quiet --variant=minbase --format=tar \
    --include="$packages" \
    --customize-hook='echo zeusd-e2e >"$1/etc/hostname"' \
    --customize-hook='rm -f "$1/etc/machine-id"; : >"$1/etc/machine-id"' \
    "$suite" "$tmp" \
    "deb $mirror $suite main" \
    "deb $mirror $suite-updates main" \
    "deb $security $suite-security main" >&2
mv "$tmp" "$tarball"
trap - EXIT
# Older tarballs of other keys are stale now.
find "$cache" -maxdepth 1 -name 'rootfs-*.tar' ! -name "$(basename "$tarball")" -delete
echo "rootfs: built in $(( $(date +%s) - start ))s" >&2
echo "$tarball"
