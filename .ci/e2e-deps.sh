#!/bin/sh
# Install what the zeusd .deb build and the end-to-end container test need on
# a fresh Debian 12 machine (as root). Idempotent: installs only what is
# missing, and runs "apt-get update" only then.
set -eu

packages="
systemd-container
systemd
mmdebstrap
debhelper
dh-python
pybuild-plugin-pyproject
python3-all
python3-setuptools
python3-pytest
lintian
fakeroot
build-essential
util-linux
"

missing=""
for p in $packages; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    echo "e2e-deps: installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
else
    echo "e2e-deps: all present"
fi
