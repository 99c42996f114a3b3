"""End to end: the zeusd .deb in a booted Debian 12 container, driven like an admin would.

Opt-in (root, systemd-nspawn, mmdebstrap, network for the first rootfs build):
    tests/e2e/run.sh            (or: ZEUSD_E2E=1 python3 -m pytest tests/e2e -v)
The tests run in file order and share one container; a step that later steps
need records its success, and those steps skip (naming it) when it failed.
The GPUs are tests/fake_nvml (a fake libnvidia-ml.so.1 installed in the
container), so the daemon runs its real NVML code path, unmodified.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from tests.e2e.container import Container, ContainerError, Result

pytestmark = pytest.mark.skipif(os.environ.get("ZEUSD_E2E") != "1",
                                reason="end-to-end container test: run tests/e2e/run.sh (needs root)")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
UPGRADE_VERSION = "0.2.0-1+e2e1"
SOCK = "/run/zeusd/zeusd.sock"
MAX_LIMIT_MW = 700000  # the fake GPUs' default and maximum power limit
DEB_DIR = "/root/debs"
passed: set[str] = set()


def need(*steps: str) -> None:
    missing = [s for s in steps if s not in passed]
    if missing:
        pytest.skip(f"needs the earlier step(s) {', '.join(missing)}, which failed")


def wait_for(what: str, probe, timeout_s: float = 20, interval_s: float = 0.3):
    """Call probe() until it returns a true value; fail naming WHAT after TIMEOUT_S."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


# -- fixtures: build on the host, boot the container ------------------------------------

def _run_host(argv: list[str], timeout_s: float, what: str) -> str:
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout_s,
                              cwd=REPO)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} took more than {timeout_s}s")
    if proc.returncode:
        pytest.fail(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    """The package as built from this tree, and a rebuild with a higher version for the upgrade."""
    out = str(tmp_path_factory.mktemp("debs"))
    build = os.path.join(REPO, "packaging", "build-deb.sh")
    first = _run_host([build, "--out", out], 900, "building the .deb").strip().splitlines()[-1]
    second = _run_host([build, "--out", out, "--version", UPGRADE_VERSION], 900,
                       "building the upgrade .deb").strip().splitlines()[-1]
    return {"first": first, "upgrade": second}


@pytest.fixture(scope="module")
def fake_nvml(tmp_path_factory):
    src = os.path.join(REPO, "tests", "fake_nvml")
    if not os.path.exists(os.path.join(src, "fake_nvml.c")):
        pytest.fail("tests/fake_nvml/fake_nvml.c is missing: the e2e needs the fake libnvidia-ml.so.1")
    out = str(tmp_path_factory.mktemp("fake_nvml"))
    _run_host(["make", "-s", "-C", src, f"OUT={out}"], 300, "building the fake NVML library")
    return os.path.join(out, "libnvidia-ml.so.1")


@pytest.fixture(scope="module")
def rootfs():
    start = time.monotonic()
    path = _run_host([os.path.join(HERE, "rootfs.sh")], 1800, "building the Debian 12 root file system")
    print(f"rootfs ready in {time.monotonic() - start:.0f}s: {path.strip()}")
    return path.strip().splitlines()[-1]


FAKE_NVML_DROPIN = """\
# e2e only: the fake libnvidia-ml.so.1 keeps the GPUs' state in a file (a real
# GPU keeps it in the driver), which ProtectSystem=strict would make read-only.
[Service]
ReadWritePaths=/run/fake-nvml
Environment=FAKE_NVML_LOG=/run/fake-nvml/calls.log
"""


@pytest.fixture(scope="module")
def ct(debs, fake_nvml, rootfs):
    container = Container(rootfs)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):  # a CI timeout: unwind so the container is torn down
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        container.unpack()
        os.makedirs(container.path(DEB_DIR), exist_ok=True)
        for deb in debs.values():
            shutil.copy(deb, container.path(DEB_DIR))
        with open(fake_nvml, "rb") as f:
            container.put("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1", f.read(), 0o644)
        container.put("/etc/tmpfiles.d/fake-nvml.conf", "d /run/fake-nvml 0755 root root -\n")
        container.put("/etc/systemd/system/zeusd.service.d/fake-nvml.conf", FAKE_NVML_DROPIN)
        with open(os.path.join(HERE, "client.py"), "rb") as f:
            container.put("/usr/local/bin/zeusd-e2e-client", f.read(), 0o755)
        for name in ("limited.toml", "bad.toml"):
            with open(os.path.join(HERE, "policies", name), "rb") as f:
                container.put(f"/root/policies/{name}", f.read(), 0o644)
        start = time.monotonic()
        container.boot(timeout_s=120)
        print(f"container booted in {time.monotonic() - start:.1f}s")
        container.sh("ldconfig && useradd --create-home alice && useradd --create-home bob")
        yield container
    finally:
        try:
            if os.environ.get("ZEUSD_E2E_JOURNAL") and container.leader:
                print(container.sh("journalctl --no-pager -n 200", check=False).stdout)
        except ContainerError:
            pass
        container.stop()
        signal.signal(signal.SIGTERM, previous)


# -- helpers inside the container -------------------------------------------------------

def client(ct: Container, *requests: str, user: str | None = None) -> list[dict]:
    """Requests ("GET /discover", ...) from ONE process in the container; their results."""
    words = " ".join(f"{r.split()[0]} '{r.split()[1]}'" for r in requests)
    res = ct.sh(f"zeusd-e2e-client {words}", user=user, check=False, timeout=60)
    try:
        return [json.loads(line) for line in res.stdout.splitlines()]
    except ValueError:
        pytest.fail(f"client printed something that is not JSON:\n{res}")


def one(ct: Container, request: str, user: str | None = None) -> dict:
    out = client(ct, request, user=user)
    assert len(out) == 1, out
    return out[0]


def power_limit_mw(ct: Container, gpu: int, user: str | None = None) -> int | None:
    r = one(ct, f"GET /gpu/get_power_limit?gpu_ids={gpu}", user=user)
    if r.get("status") != 200:
        return None
    return r["body"][str(gpu)]["power_limit_mw"]


def show(ct: Container, unit: str, *props: str) -> dict[str, str]:
    out = ct.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def sha256_in(ct: Container, path: str) -> str:
    with open(ct.path(path), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def install_policy(ct: Container, name: str) -> None:
    ct.sh(f"install -m 0644 -o root -g root /root/policies/{name} /etc/zeusd/policy.toml")


def apt_install(ct: Container, deb: str) -> None:
    # No network needed: every dependency is in the cached root file system.
    ct.sh(f"apt-get install -y --no-install-recommends {DEB_DIR}/{os.path.basename(deb)} </dev/null",
          timeout=300)


# -- the tests, in the order an administrator meets them --------------------------------

def test_lintian_clean(debs):
    out = _run_host(["lintian", "--fail-on", "error,warning", debs["first"]], 300, "lintian")
    print(out)
    passed.add("lintian")


def test_unit_security_exposure():
    out = _run_host(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                     os.path.join(REPO, "packaging", "systemd", "zeusd.service")], 60,
                    "systemd-analyze security")
    m = re.search(r"Overall exposure level for zeusd.service: ([0-9.]+)", out)
    assert m, out
    print(f"exposure score: {m.group(1)}")
    assert float(m.group(1)) <= 2.0, f"the unit's exposure rose to {m.group(1)}:\n{out}"


def test_install_enables_and_starts_only_the_socket(ct, debs):
    apt_install(ct, debs["first"])
    assert re.match(r"zeusd:x:\d+:", ct.sh("getent group zeusd").stdout)
    gid = int(ct.sh("getent group zeusd").stdout.split(":")[2])
    assert gid < 1000, f"zeusd should be a system group, got gid {gid}"
    assert ct.sh("systemctl is-enabled zeusd.socket").stdout.strip() == "enabled"
    assert ct.sh("systemctl is-active zeusd.socket").stdout.strip() == "active"
    assert ct.sh("systemctl is-active zeusd.service", check=False).stdout.strip() == "inactive"
    enabled = ct.sh("systemctl is-enabled zeusd.service", check=False).stdout.strip()
    assert enabled in ("disabled", "indirect", "static"), enabled
    assert ct.sh(f"stat -c '%A %U %G' {SOCK}").stdout.split() == ["srw-rw----", "root", "zeusd"]
    assert ct.sh("stat -c '%a %U %G' /etc/zeusd/policy.toml").stdout.split() == ["644", "root", "root"]
    conffiles = ct.sh("dpkg-query -W -f='${Conffiles}' zeusd").stdout
    assert "/etc/zeusd/policy.toml" in conffiles and "/etc/default/zeusd" in conffiles, conffiles
    ct.sh("zeusd policy check /etc/zeusd/policy.toml")
    passed.add("installed")


def test_units_verify_silently(ct):
    need("installed")
    res = ct.sh("systemd-analyze verify /lib/systemd/system/zeusd.socket /lib/systemd/system/zeusd.service 2>&1",
                check=False)
    assert res.returncode == 0 and res.stdout.strip() == "", f"systemd-analyze verify is not silent:\n{res}"


def test_root_request_activates_the_service(ct):
    need("installed")
    res = ct.sh(f"curl -sS --max-time 30 --unix-socket {SOCK} http://x/discover", timeout=60)
    body = json.loads(res.stdout)
    assert [g["id"] for g in body["gpus"]] == [0, 1], body
    assert "gpu-control" in body["enabled_api_groups"], body
    props = show(ct, "zeusd.service", "ActiveState", "SubState", "MainPID", "TriggeredBy")
    assert props["ActiveState"] == "active" and props["SubState"] == "running", props
    assert "zeusd.socket" in props["TriggeredBy"], props
    # The real NVML code path ran, against the fake library.
    calls = wait_for("NVML calls in the fake's log",
                     lambda: ct.sh("cat /run/fake-nvml/calls.log", check=False).stdout)
    assert "nvmlInit" in calls, calls
    passed.add("activated")


def test_service_runs_sandboxed(ct):
    need("activated")
    pid = show(ct, "zeusd.service", "MainPID")["MainPID"]
    status = ct.sh(f"cat /proc/{pid}/status").stdout
    fields = dict(re.findall(r"^(\w+):\s*(.*)$", status, re.MULTILINE))
    assert fields["NoNewPrivs"] == "1", fields
    assert fields["Seccomp"] == "2", fields
    # CAP_SYS_ADMIN (21) and CAP_DAC_READ_SEARCH (2), nothing else.
    assert int(fields["CapBnd"], 16) == (1 << 21) | (1 << 2), fields["CapBnd"]
    assert fields["Uid"].split()[0] == "0", fields["Uid"]


def test_group_member_may_set_power_limit(ct):
    need("activated")
    ct.sh("adduser --quiet alice zeusd")
    out = client(ct, "POST /gpu/set_power_limit?gpu_ids=0&power_limit_mw=300000&block=true",
                 "GET /gpu/get_power_limit?gpu_ids=0", user="alice")
    assert out[0] == {"status": 200, "body": None}, out
    assert out[1]["status"] == 200 and out[1]["body"]["0"]["power_limit_mw"] == 300000, out
    passed.add("member-writes")


def test_outsider_cannot_connect(ct):
    need("installed")
    res = ct.sh(f"curl -sS --max-time 10 --unix-socket {SOCK} http://x/discover", user="bob", check=False)
    assert res.returncode == 7, f"curl should fail to connect:\n{res}"
    out = one(ct, "GET /discover", user="bob")
    assert out.get("error") == "EACCES", out


def zeusctl(ct: Container, args: str, user: str) -> Result:
    return ct.sh(f"zeusctl {args}", user=user, check=False, timeout=60)


def test_zeusctl_is_installed_with_its_completion(ct):
    need("member-writes")
    completion = "/usr/share/bash-completion/completions/zeusctl"
    res = ct.sh(f"bash -c 'source {completion} && complete -p zeusctl && "
                "COMP_WORDS=(zeusctl set power-limit 300W --g); COMP_CWORD=4; _zeusctl && "
                "echo \"${COMPREPLY[@]}\"'")
    assert res.stdout.splitlines()[0] == "complete -F _zeusctl zeusctl", res
    assert res.stdout.splitlines()[-1] == "--gpu", res  # `zeusctl set power-limit 300W --g<TAB>`
    status = zeusctl(ct, "status", "alice")
    assert status.returncode == 0 and "H200" in status.stdout, status
    whoami = zeusctl(ct, "--json whoami", "alice")
    assert whoami.returncode == 0, whoami
    alice_uid = int(ct.sh("id -u alice").stdout)
    assert json.loads(whoami.stdout)["caller"]["uid"] == alice_uid, whoami


def test_zeusctl_sets_as_a_member_and_an_outsider_is_refused(ct):
    need("member-writes")
    before = power_limit_mw(ct, 0)
    assert before != 320000, before
    done = zeusctl(ct, "set power-limit 320W --gpu 0", "alice")
    assert done.returncode == 0, done
    # The shipped policy leases a member's change to the calling process (restore_on_exit):
    # zeusctl's own process ends at once, so 320 W was applied and is then put back.
    calls = ct.sh("cat /run/fake-nvml/calls.log").stdout
    assert " nvmlDeviceSetPowerManagementLimit 320000 -> 0" in calls, calls[-2000:]
    wait_for("zeusctl's lease to restore GPU 0", lambda: power_limit_mw(ct, 0) == before)
    refused = zeusctl(ct, "set power-limit 250W --gpu 0", "bob")  # not in group zeusd
    assert refused.returncode == 3, refused  # cannot connect: the socket is root:zeusd 0660
    assert refused.stderr.startswith("zeusctl: error: ") and "ermission denied" in refused.stderr, \
        refused
    assert " nvmlDeviceSetPowerManagementLimit 250000" not in ct.sh("cat /run/fake-nvml/calls.log").stdout
    assert power_limit_mw(ct, 0) == before


def test_reload_changes_decisions(ct):
    need("member-writes")
    first = one(ct, "POST /gpu/set_power_limit?gpu_ids=0&power_limit_mw=450000&block=true", user="alice")
    assert first["status"] == 200, first
    install_policy(ct, "limited.toml")
    pid = show(ct, "zeusd.service", "MainPID")["MainPID"]
    ct.sh("systemctl reload zeusd", timeout=60)
    # SIGHUP is asynchronous: wait for the new decision.
    def denied_450w():
        r = one(ct, "POST /gpu/set_power_limit?gpu_ids=0&power_limit_mw=450000&block=true", user="alice")
        return r if r.get("status") == 403 else None

    denied = wait_for("the reloaded policy to deny 450 W to alice", denied_450w)
    assert denied["body"].get("rule") == "e2e-alice-capped", denied
    assert "e2e-alice-capped" in denied["body"]["error"], denied
    before = power_limit_mw(ct, 0)
    again = one(ct, "POST /gpu/set_power_limit?gpu_ids=0&power_limit_mw=450000&block=true", user="alice")
    assert again["status"] == 403, again
    assert power_limit_mw(ct, 0) == before, "a denied request changed the GPU"
    ok = one(ct, "POST /gpu/set_power_limit?gpu_ids=0&power_limit_mw=350000&block=true", user="alice")
    assert ok["status"] == 200, ok
    assert power_limit_mw(ct, 0) == 350000  # restore_on_exit = false in limited.toml
    assert show(ct, "zeusd.service", "MainPID")["MainPID"] == pid, "reload must not restart"
    passed.add("reloaded")


def test_bad_policy_refused_by_reload(ct):
    need("reloaded")
    pid = show(ct, "zeusd.service", "MainPID")["MainPID"]
    install_policy(ct, "bad.toml")
    res = ct.sh("systemctl reload zeusd", check=False, timeout=60)
    assert res.returncode != 0, f"reload accepted a bad policy:\n{res}"
    props = show(ct, "zeusd.service", "ActiveState", "MainPID")
    assert props == {"ActiveState": "active", "MainPID": pid}, props
    time.sleep(1)
    still = one(ct, "POST /gpu/set_power_limit?gpu_ids=0&power_limit_mw=450000&block=true", user="alice")
    assert still["status"] == 403 and still["body"].get("rule") == "e2e-alice-capped", still
    log = ct.sh("journalctl -u zeusd --no-pager -n 50 -o cat").stdout
    assert "no_such_key" in log, f"the refused policy's error is not in the journal:\n{log}"
    install_policy(ct, "limited.toml")


def test_zeusctl_reports_a_policy_denial(ct):
    need("reloaded")  # limited.toml: alice may set GPU 0 to 200-400 W only
    before = power_limit_mw(ct, 0)
    denied = zeusctl(ct, "set power-limit 450W --gpu 0", "alice")
    assert denied.returncode == 4, denied
    assert "e2e-alice-capped" in denied.stderr, denied
    assert power_limit_mw(ct, 0) == before, "a denied set changed the GPU"


def test_audit_records_in_journal(ct):
    need("reloaded")
    ct.sh("journalctl --sync", check=False)
    res = ct.sh("journalctl -u zeusd ZEUSD_DECISION=deny -o json --no-pager")
    records = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    alice_uid = ct.sh("id -u alice").stdout.strip()
    mine = [r for r in records if r.get("ZEUSD_CALLER_UID") == alice_uid
            and r.get("ZEUSD_OPERATION") == "set_power_limit"]
    assert mine, f"no deny record for alice's set_power_limit in:\n{res.stdout[-3000:]}"
    rec = mine[-1]
    for field in ("ZEUSD_RULE", "ZEUSD_GPU_INDEX", "ZEUSD_GPU_UUID", "ZEUSD_NEW_VALUE",
                  "ZEUSD_POLICY_HASH", "ZEUSD_CALLER_PID", "MESSAGE"):
        assert rec.get(field), f"{field} missing from {rec}"
    assert rec["ZEUSD_RULE"] == "e2e-alice-capped" and rec["ZEUSD_GPU_INDEX"] == "0", rec
    assert rec.get("_SYSTEMD_UNIT") == "zeusd.service", rec
    allowed = ct.sh("journalctl -u zeusd ZEUSD_DECISION=allow -o json --no-pager").stdout
    assert allowed.strip(), "allowed changes are not audited"


def test_stopped_service_is_reactivated_by_a_request(ct):
    need("activated")
    old = show(ct, "zeusd.service", "MainPID")["MainPID"]
    ct.sh("systemctl stop zeusd.service", timeout=90)
    assert ct.sh("systemctl is-active zeusd.service", check=False).stdout.strip() == "inactive"
    assert ct.sh("systemctl is-active zeusd.socket").stdout.strip() == "active"
    assert ct.sh(f"test -S {SOCK}", check=False).returncode == 0, "stopping the service removed the socket"
    r = one(ct, "GET /discover")
    assert r["status"] == 200, r
    props = show(ct, "zeusd.service", "ActiveState", "MainPID")
    assert props["ActiveState"] == "active" and props["MainPID"] not in ("0", old), props


HOLDER_PID = "/tmp/zeusd-e2e-holder.pid"


def hold_power_limit(ct: Container, user: str, mw: int) -> int:
    """A client process of USER that sets GPU 1's power limit and stays alive; its pid.
    (GPU 1: on GPU 0 the e2e policy in force lets alice's changes outlive her.)"""
    ct.sh(f"rm -f {HOLDER_PID} /tmp/holder.out")
    ct.sh("setsid sh -c 'sleep 600 | zeusd-e2e-client POST "
          f"\"/gpu/set_power_limit?gpu_ids=1&power_limit_mw={mw}&block=true\" --hold-stdin "
          f"> /tmp/holder.out 2>&1 & echo $! > {HOLDER_PID}' < /dev/null > /dev/null 2>&1",
          user=user)
    wait_for("the holder's change", lambda: '"status": 200' in ct.sh(
        "cat /tmp/holder.out", check=False).stdout)
    return int(ct.sh(f"cat {HOLDER_PID}").stdout)


def test_a_lease_survives_the_daemons_sigkill_and_the_next_activation_restores_it(ct):
    need("member-writes")
    holder = hold_power_limit(ct, "alice", 250000)
    leases = one(ct, "GET /leases")["body"]["leases"]
    assert [(l["knob"], l["captured"], l["holders"][0]["pid"]) for l in leases] == \
        [("power_limit", MAX_LIMIT_MW, holder)], leases
    # zeusd dies with the lease open; its owner exits while no zeusd runs
    ct.sh(f"systemctl kill -s KILL zeusd.service; kill -9 {holder}", timeout=60)
    wait_for("the next activation to restore the power limit",
             lambda: power_limit_mw(ct, 1) == MAX_LIMIT_MW, timeout_s=60)
    restored = ct.sh("journalctl -u zeusd ZEUSD_EVENT=lease_restored_at_start -o json "
                     "--no-pager").stdout
    assert f'"ZEUSD_HOLDER_PID":"{holder}"' in restored.replace(" ", ""), restored


def test_systemctl_stop_restores_every_lease(ct):
    need("member-writes")
    # the steps before started zeusd 3 times within a minute (StartLimitBurst=3): start afresh
    ct.sh("systemctl reset-failed zeusd.service")
    holder = hold_power_limit(ct, "alice", 260000)
    ct.sh("systemctl stop zeusd.service", timeout=90)
    logged = ct.sh("journalctl -u zeusd ZEUSD_EVENT=lease_restored -o json --no-pager").stdout
    ct.sh(f"kill -9 {holder}")
    assert f'"ZEUSD_HOLDER_PID":"{holder}"' in logged.replace(" ", ""), logged
    after = power_limit_mw(ct, 1)  # (this request activates a fresh zeusd)
    assert after == MAX_LIMIT_MW, units_state(ct)


TCP_EXAMPLE = "/usr/share/doc/zeusd/examples/zeusd-tcp.conf"
TCP_DROPIN = "/etc/systemd/system/zeusd.socket.d/tcp.conf"
TCP_URL = "http://127.0.0.1:4938"


def reload_units(ct: Container, change: str = "true", *then: str) -> None:
    """Run ``change`` (files), `systemctl daemon-reload`, then each command in ``then``."""
    ct.sh(" && ".join([change, "systemctl daemon-reload", *then]), timeout=120)


def units_state(ct: Container) -> str:
    """For a failure message: the units' status, their journal, the listening sockets."""
    return ct.sh("systemctl status --no-pager zeusd.socket zeusd.service; "
                 "journalctl --no-pager -n 40 -u zeusd.socket -u zeusd.service; ss -ltnx",
                 check=False, timeout=60).stdout


def exposure(ct: Container) -> float:
    out = ct.sh("systemd-analyze security --no-pager zeusd.service").stdout
    m = re.search(r"Overall exposure level for zeusd.service: ([0-9.]+)", out)
    assert m, out
    return float(m.group(1))


def test_service_limits_are_set(ct):
    need("installed")
    props = show(ct, "zeusd.service", "MemoryMax", "TasksMax", "LimitNOFILE", "DeviceAllow")
    assert (props["MemoryMax"], props["TasksMax"], props["LimitNOFILE"]) == \
        (str(256 * 1024 * 1024), "256", "1024"), props
    # The fd budget (zeusd.service's comment): every admitted connection (--max-connections,
    # default 256) and the 16 waitress accepts only to refuse, with room for NVML and the rest.
    assert int(props["LimitNOFILE"]) >= 3 * (256 + 16), props


def test_tcp_drop_in_serves_tcp_and_the_unix_socket_keeps_working(ct):
    need("activated")
    before_score = exposure(ct)
    reload_units(ct, f"install -D -m 0644 {TCP_EXAMPLE} {TCP_DROPIN}",
                 "systemctl restart zeusd.socket")
    listening = ct.sh("systemctl show zeusd.socket -p Listen").stdout.splitlines()
    assert listening == [f"Listen={SOCK} (Stream)", "Listen=127.0.0.1:4938 (Stream)"], listening
    try:
        res = ct.sh(f"curl -sS --max-time 30 {TCP_URL}/discover", timeout=60, check=False)
        assert res.returncode == 0, f"{res}\n{units_state(ct)}"
        body = json.loads(res.stdout)
        assert body["caller"] == {"transport": "tcp", "subject": None}, body
        unix = one(ct, "GET /discover")
        assert unix["status"] == 200 and unix["body"]["caller"]["transport"] == "unix", unix
        before = power_limit_mw(ct, 0)
        code = ct.sh(f"curl -sS -o /dev/null -w '%{{http_code}}' -X POST --max-time 30 "
                     f"'{TCP_URL}/gpu/set_power_limit?gpu_ids=0&power_limit_mw=380000&block=true'",
                     timeout=60).stdout
        assert code == "403", code  # anonymous TCP callers only read (the policy's defaults)
        assert power_limit_mw(ct, 0) == before
        log = ct.sh("journalctl -u zeusd --no-pager -n 60 -o cat").stdout
        assert "WITHOUT --signing-key-path: every TCP caller is anonymous" in log, log
        assert "(tcp:127.0.0.1:4938)" in log and f"(unix:{SOCK})" in log, log
        # The drop-in is on the socket only: the service's sandbox is what it was.
        props = show(ct, "zeusd.service", "PrivateNetwork", "IPAddressDeny",
                     "RestrictAddressFamilies")
        assert props["PrivateNetwork"] == "yes" and props["RestrictAddressFamilies"] == "AF_UNIX", props
        assert exposure(ct) == before_score
    finally:
        reload_units(ct, f"rm -f {TCP_DROPIN}", "systemctl restart zeusd.socket")
    refused = ct.sh(f"curl -sS --max-time 10 {TCP_URL}/discover", check=False, timeout=30)
    assert refused.returncode == 7, refused  # nothing listens on TCP any more
    assert one(ct, "GET /discover")["status"] == 200
    passed.add("tcp")


NODE = "/root/node"  # a GPU node's /proc and /dev for zeusd doctor (the kernel here has none)
OLD_DEVICES_DROPIN = "/etc/systemd/system/zeusd.service.d/old-devices.conf"


def doctor(ct: Container, *args: str) -> tuple[int, dict[str, dict]]:
    res = ct.sh(f"zeusd doctor --json --proc-root {NODE}/proc --dev-root {NODE}/dev "
                + " ".join(args), check=False, timeout=180)
    try:
        report = json.loads(res.stdout)
    except ValueError:
        pytest.fail(f"zeusd doctor printed no JSON:\n{res}")
    return res.returncode, {c["name"]: c for c in report["checks"]}


def test_doctor_passes_and_catches_a_broken_allow_list(ct):
    need("activated")
    with open(os.path.join(REPO, "tests", "unit", "data", "proc-devices", "driver-580.txt")) as f:
        ct.put(f"{NODE}/proc/devices", f.read())
    ct.put(f"{NODE}/proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX x86_64 Kernel "
           "Module  580.65.06  Sun Jul 27 07:09:55 UTC 2025\n")
    os.makedirs(ct.path(f"{NODE}/dev"), exist_ok=True)
    for name, minor in (("nvidiactl", 255), ("nvidia0", 0), ("nvidia1", 1)):
        os.mknod(ct.path(f"{NODE}/dev/{name}"), 0o666 | 0o020000, os.makedev(195, minor))
    code, checks = doctor(ct, "--write-check")
    assert checks["gpu library"]["data"]["driver"].endswith("-fake"), checks["gpu library"]
    assert checks["device allow-list"]["status"] == "ok", checks["device allow-list"]
    assert checks["device allow-list"]["data"]["source"] == "systemctl show zeusd.service"
    assert checks["sandbox"]["status"] == "ok", checks["sandbox"]
    for prop in ("DeviceAllow", "SystemCallFilter", "MemoryDenyWriteExecute"):
        assert prop in checks["sandbox"]["data"]["properties"], checks["sandbox"]
    assert checks["socket"]["detail"] == f"{SOCK}: root:zeusd 0660", checks["socket"]
    assert checks["gpu 0"]["data"]["setters"] == {"power limit": "ok", "persistence mode": "ok"}
    assert checks["policy"]["status"] == "ok"
    assert code == 0, checks
    print(ct.sh(f"zeusd doctor --proc-root {NODE}/proc --dev-root {NODE}/dev", check=False,
                timeout=180).stdout)  # what an administrator sees, for the log
    ct.put(OLD_DEVICES_DROPIN, "[Service]\nDeviceAllow=\nDeviceAllow=char-nvidia-frontend rw\n"
           "DeviceAllow=char-nvidia-caps r\n")
    reload_units(ct)
    allowed = ct.sh("systemctl show zeusd.service -p DeviceAllow").stdout.split("\n")
    assert "DeviceAllow=char-nvidia-frontend rw" in allowed and \
        "DeviceAllow=char-nvidia rw" not in allowed, allowed
    try:
        code, checks = doctor(ct, "--no-sandbox-probe")
        assert code == 1 and checks["device allow-list"]["status"] == "problem", checks
        assert "('nvidia' in /proc/devices)" in checks["device allow-list"]["detail"]
    finally:
        reload_units(ct, f"rm -f {OLD_DEVICES_DROPIN}")


BROKEN_NVML_DROPIN = "/etc/systemd/system/zeusd.service.d/broken-nvml.conf"


def test_nvml_that_cannot_start_fails_the_socket_with_one_error_per_attempt(ct):
    need("activated")
    since = ct.sh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    time.sleep(1)
    ct.put(BROKEN_NVML_DROPIN, "[Service]\nEnvironment=FAKE_NVML_INIT_ERROR=18\n")
    reload_units(ct, "true", "systemctl stop zeusd.service")
    try:
        ct.sh(f"curl -sS --max-time 5 --unix-socket {SOCK} http://x/discover", check=False,
              timeout=30)
        wait_for("zeusd.socket to fail", lambda: ct.sh(
            "systemctl is-failed zeusd.socket", check=False).stdout.strip() == "failed",
            timeout_s=90)
        assert show(ct, "zeusd.socket", "Result")["Result"] == "service-start-limit-hit"
        ct.sh("journalctl --sync", check=False)
        log = ct.sh(f"journalctl -u zeusd.service --since '{since}' --no-pager -o cat").stdout
        errors = [line for line in log.splitlines() if line.startswith("zeusd: error:")]
        exits = [line for line in log.splitlines() if "Main process exited" in line]
        assert 1 <= len(errors) <= 3 and len(errors) == len(exits), log
        assert all("nvmlInit failed" in e and "Fix: reboot" in e for e in errors), errors
        assert "Traceback" not in log
    finally:
        reload_units(ct, f"rm -f {BROKEN_NVML_DROPIN}",
                     "systemctl reset-failed zeusd.service zeusd.socket",
                     "systemctl start zeusd.socket")
    again = one(ct, "GET /discover")
    assert again.get("status") == 200, f"{again}\n{units_state(ct)}"


def test_upgrade_keeps_edited_policy(ct, debs):
    need("reloaded")
    edited = sha256_in(ct, "/etc/zeusd/policy.toml")
    old_pid = show(ct, "zeusd.service", "MainPID")["MainPID"]
    apt_install(ct, debs["upgrade"])
    version = ct.sh("dpkg-query -W -f='${Version}' zeusd").stdout
    assert version == UPGRADE_VERSION, version
    assert sha256_in(ct, "/etc/zeusd/policy.toml") == edited, "the upgrade replaced the edited policy"
    assert not os.path.exists(ct.path("/etc/zeusd/policy.toml.dpkg-new"))
    assert ct.sh("systemctl is-active zeusd.socket").stdout.strip() == "active"
    props = show(ct, "zeusd.service", "ActiveState", "MainPID")
    if old_pid != "0":  # a running service is restarted onto the new code
        assert props["ActiveState"] == "active" and props["MainPID"] != old_pid, props
    r = one(ct, "POST /gpu/set_power_limit?gpu_ids=0&power_limit_mw=450000&block=true", user="alice")
    assert r["status"] == 403 and r["body"].get("rule") == "e2e-alice-capped", r


def test_purge_removes_everything(ct):
    need("installed")
    ct.sh("apt-get purge -y zeusd </dev/null", timeout=300)
    assert ct.sh("getent group zeusd", check=False).returncode == 2, "group zeusd survived the purge"
    for path in ("/etc/zeusd", "/etc/default/zeusd", "/var/lib/zeusd", "/run/zeusd",
                 "/lib/systemd/system/zeusd.service", "/etc/systemd/system/sockets.target.wants/zeusd.socket"):
        assert not os.path.lexists(ct.path(path)), f"{path} survived the purge"
    assert ct.sh("systemctl is-active zeusd.socket zeusd.service", check=False).stdout.split() == \
        ["inactive", "inactive"]
    assert ct.sh("pgrep -x zeusd", check=False).returncode == 1, "a zeusd process survived"
