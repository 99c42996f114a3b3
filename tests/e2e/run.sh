#!/bin/sh
# The zeusd end-to-end test in one command (as root):  tests/e2e/run.sh [pytest args]
# Builds the .deb and the fake NVML library, builds or reuses the cached
# Debian 12 root file system, boots it with systemd-nspawn and runs
# tests/e2e/test_deb_in_systemd.py against it. Bounded: the whole run is
# killed after ZEUSD_E2E_TIMEOUT_S (default 2400) seconds, and the container
# is always torn down. Install the host's tools first with .ci/e2e-deps.sh.
set -eu

repo=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "e2e: must run as root (systemd-nspawn)" >&2; exit 1; }
for tool in systemd-nspawn nsenter mmdebstrap dpkg-buildpackage lintian make gcc; do
    command -v "$tool" >/dev/null || { echo "e2e: $tool is missing; run .ci/e2e-deps.sh" >&2; exit 1; }
done
/usr/bin/python3 -c 'import pytest' 2>/dev/null || { echo "e2e: python3-pytest is missing; run .ci/e2e-deps.sh" >&2; exit 1; }

cd "$repo"
export ZEUSD_E2E=1
# Debian's python (not a pyenv/venv one): the harness only needs pytest.
exec timeout --signal=TERM --kill-after=60 "${ZEUSD_E2E_TIMEOUT_S:-2400}" \
    /usr/bin/python3 -m pytest -p no:cacheprovider -v -s --tb=short -o addopts="" -o testpaths=tests/e2e \
    --rootdir "$repo" tests/e2e/test_deb_in_systemd.py "$@"
