"""Fuzz every route of the real daemon as an unprivileged user (issue #8, the adversarial
suite). fuzz_client.py generates and checks the requests; this module starts the daemons and
runs it under setpriv.

Size: ZEUSD_FUZZ_REQUESTS (default 20000) requests per daemon, stopping early after
ZEUSD_FUZZ_SECONDS (default 40) per daemon, so `make test` spends at most about 1.5 minutes
here (a 2-core machine fuzzes ~10000-30000 requests in that time); raise both for a longer
hunt. Seed:
ZEUSD_FUZZ_SEED (default: a new random one, printed, and named in every failure); rerun a
failure with the same seed to get the same requests.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.harness import Zeusd
from tests.support.policy_daemon import traversable_dir
from tests.support.rapl import FakeRapl
from tests.support.sim import SimGpus
from tests.support.users import Accounts, needs_real_users, user_python

pytestmark = needs_real_users

CLIENT = Path(__file__).with_name("fuzz_client.py")
REQUESTS = int(os.environ.get("ZEUSD_FUZZ_REQUESTS", "20000"))
SECONDS = float(os.environ.get("ZEUSD_FUZZ_SECONDS", "40"))
SEED = int(os.environ.get("ZEUSD_FUZZ_SEED", str(random.SystemRandom().randrange(2**32))))

# What the daemon's log must never show: a Python traceback, or waitress's report of an exception
# that escaped its own code (it closes that connection unanswered).
LOG_LEAKS = ("Traceback", "uncaptured python exception")

POLICY = """\
[defaults]
operations = ["gpu-read", "cpu-read"]

[[rule]]
name = "fuzz"
users = ["{user}"]
gpus = [0, 1]
operations = ["all"]
power_limit_w = [200, 700]
gpu_clock_mhz = [200, 3000]
mem_clock_mhz = [200, 3500]
"""


@pytest.fixture(scope="module")
def fuzzer():
    with Accounts() as accounts:
        yield accounts.user("fz")


@pytest.fixture
def start(fuzzer):
    """``start(key)`` -> a daemon (on GPUs 0-3, RAPL, this policy; tokens if ``key``)."""
    started = []

    def launch(key: bytes | None) -> Zeusd:
        tmp = traversable_dir("zdfz-")  # the fuzzer reads the GPU journal in here
        args = ()
        if key is not None:
            (tmp / "signing.key").write_bytes(key)
            args = ("--signing-key-path", str(tmp / "signing.key"))
        daemon = Zeusd(tmp, gpus=SimGpus(tmp), rapl=FakeRapl(tmp / "rapl"),
                       policy_text=POLICY.format(user=fuzzer.name), args=args)
        started.append(daemon)
        return daemon

    yield launch
    for daemon in started:
        daemon.stop()
        shutil.rmtree(daemon.tmp, ignore_errors=True)


def fuzz(daemon: Zeusd, user, seed: int, key: bytes | None) -> dict:
    argv = ["setpriv", "--reuid", str(user.uid), "--regid", str(user.gid), "--init-groups",
            user_python(), "-I", str(CLIENT), daemon.socket_path,
            str(daemon.gpus.journal_path), str(seed), str(REQUESTS), str(SECONDS)]
    if key is not None:
        argv.append(key.hex())
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=SECONDS + 120,
                          cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                          check=False)
    assert proc.returncode == 0, f"fuzzer (seed {seed}) crashed:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def check(report: dict, daemon: Zeusd, label: str, user) -> None:
    print(f"\nfuzz {label}: seed {report['seed']}, {report['requests']} requests, "
          f"status mix {report['statuses']}")
    assert not report["failures"], (
        f"fuzz {label} failed; rerun with ZEUSD_FUZZ_SEED={report['seed']}:\n"
        + json.dumps(report["failures"][:5], indent=1))
    assert report["requests"] >= min(REQUESTS, 200), report
    assert report["uid"] == user.uid != 0  # the requests came from the unprivileged user
    assert daemon.daemon.proc.poll() is None, "the daemon died"
    assert daemon.get("/time").status == 200
    log = daemon.log()
    for leak in LOG_LEAKS:
        assert leak not in log, f"fuzz {label} (seed {report['seed']}): {leak!r} in the log:\n" \
            + log[-3000:]


def test_fuzz_every_route_without_auth(start, fuzzer):
    daemon = start(None)
    check(fuzz(daemon, fuzzer, SEED, None), daemon, "unix", fuzzer)


def test_fuzz_every_route_with_tokens(start, fuzzer):
    key = secrets.token_bytes(32)
    daemon = start(key)
    check(fuzz(daemon, fuzzer, SEED + 1, key), daemon, "unix+tokens", fuzzer)

