#!/bin/sh
# A real-GPU check of zeusd, ready to run on a node with an NVIDIA GPU, as root:
#
#   sudo tools/real_node_check.sh
#
# 1. `zeusd doctor --write-check`: driver, device access, each GPU, socket, policy;
# 2. starts `zeusd serve` on NVML on a private socket (policy: built-in, only root changes);
# 3. drives it with the released zeus 0.16 client (tools/real_node_zeus.py): reads,
#    a power stream, and writes of each GPU's CURRENT power limit and persistence mode;
# 4. tools/gpu_check.py against that daemon: every value compared with a direct NVML read;
# 5. stops the daemon (SIGTERM) and checks it exited cleanly, without a traceback.
# Prints a summary; exit status 0 when every step passed.
#
# It changes nothing on the GPUs: every write sets the value the GPU reports just before;
# it never locks clocks and never resets anything.
#
# Needs: the repository's .venv with the released clients (`make compat-clients`), or
# PYTHON=... and ZEUSD_COMPAT_CLIENTS=... pointing at them. ZEUSD_CHECK_FAKE_NVML=DIR
# runs it against the fake libnvidia-ml.so.1 in DIR (tests/fake_nvml) instead of a GPU:
# that is how the script itself is tested where no GPU is.
set -u

repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$repo/.venv/bin/python}
[ -x "$py" ] || py=python3
clients=${ZEUSD_COMPAT_CLIENTS:-$repo/.venv/zeus-clients}/zeus-0.16.0
work=$(mktemp -d /tmp/zeusd-real-node.XXXXXX)
sock="$work/zeusd.sock"
summary=""
failed=0

[ "$(id -u)" = 0 ] || { echo "real_node_check: run as root (NVML setters need CAP_SYS_ADMIN)" >&2; exit 2; }
[ -d "$clients/zeus" ] || { echo "real_node_check: zeus 0.16 client not in $clients; run \`make compat-clients\`" >&2; exit 2; }
if [ -n "${ZEUSD_CHECK_FAKE_NVML:-}" ]; then
    LD_LIBRARY_PATH=$ZEUSD_CHECK_FAKE_NVML
    export LD_LIBRARY_PATH
    echo "real_node_check: using the FAKE NVML library in $ZEUSD_CHECK_FAKE_NVML"
elif [ ! -e /proc/driver/nvidia/version ]; then
    echo "real_node_check: no NVIDIA driver loaded (/proc/driver/nvidia/version missing)" >&2
    exit 2
fi

record() {  # record NAME RESULT DETAIL
    summary="$summary$(printf '%-22s %-4s %s' "$1" "$2" "$3")
"
    [ "$2" = PASS ] || failed=1
}

run_step() {  # run_step NAME COMMAND... : output to $work/NAME.log and to the terminal
    name=$1
    shift
    echo "== $name: $*"
    if "$@" >"$work/$name.log" 2>&1; then result=PASS; else result=FAIL; fi
    cat "$work/$name.log"
    record "$name" "$result" "log: $work/$name.log"
}

cd "$repo"
run_step doctor "$py" -m zeusd doctor --write-check

echo "== daemon: zeusd serve --gpu-backend nvml on $sock"
PYTHONPATH=$repo "$py" -m zeusd serve --gpu-backend nvml --socket-path "$sock" \
    --socket-permissions 600 --policy "$work/no-policy.toml" --enable gpu-control,gpu-read \
    --num-workers 8 >"$work/daemon.log" 2>&1 &
daemon=$!
i=0
while [ ! -S "$sock" ] && kill -0 "$daemon" 2>/dev/null && [ $i -lt 300 ]; do
    sleep 0.1
    i=$((i + 1))
done
if [ -S "$sock" ]; then
    record daemon-start PASS "pid $daemon"
    run_step zeus-0.16-client env -i PATH="$PATH" PYTHONPATH="$clients" PYTHONDONTWRITEBYTECODE=1 \
        ${LD_LIBRARY_PATH:+LD_LIBRARY_PATH=$LD_LIBRARY_PATH} "$py" -S tools/real_node_zeus.py "$sock"
    run_step gpu-check "$py" tools/gpu_check.py --socket "$sock"
    kill -TERM "$daemon"
    if wait "$daemon" && ! grep -q Traceback "$work/daemon.log"; then
        record daemon-stop PASS "exit 0"
    else
        record daemon-stop FAIL "see $work/daemon.log"
    fi
else
    record daemon-start FAIL "no socket; see $work/daemon.log"
    kill -TERM "$daemon" 2>/dev/null
fi
echo "== daemon log"
cat "$work/daemon.log"

echo
echo "== summary ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), driver: $(head -n 1 /proc/driver/nvidia/version 2>/dev/null || echo "none"))"
printf '%s' "$summary"
if [ $failed = 0 ]; then echo "ALL PASSED"; else echo "SOME STEPS FAILED"; fi
exit $failed
