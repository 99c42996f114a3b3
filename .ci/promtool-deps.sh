#!/usr/bin/env bash
# promtool, from Debian's prometheus package: tests/daemon/test_metrics.py checks GET /metrics
# with `promtool check metrics` (with CI set, a missing promtool fails that test).
# Only the tool is wanted: the Prometheus server the package also starts is stopped again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
command -v promtool >/dev/null
