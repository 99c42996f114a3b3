"""Real zeusd processes for the black-box tests: one per configuration per module."""

from __future__ import annotations

import pytest

from tests.support.harness import Zeusd
from tests.support.rapl import FakeRapl
from tests.support.sim import SimGpus


@pytest.fixture(scope="module")
def start_zeusd(tmp_path_factory):
    """``start_zeusd(**kw)`` -> a running ``Zeusd``; every one is stopped after the module.

    Keywords: ``gpus`` (a SimGpus, default 4 simulated H200s with a journal),
    ``rapl`` (True for a fresh FakeRapl, or a FakeRapl), ``tcp``, ``enable``,
    ``policy_text``, ``args`` (extra command-line flags), ``env``.
    """
    started: list[Zeusd] = []

    def start(**kw) -> Zeusd:
        tmp = tmp_path_factory.mktemp("zeusd")
        if kw.get("rapl") is True:
            kw["rapl"] = FakeRapl(tmp / "rapl")
        if "gpus" not in kw:
            kw["gpus"] = SimGpus(tmp)
        daemon = Zeusd(tmp, **kw)
        started.append(daemon)
        return daemon

    yield start
    leaked = []
    for daemon in started:
        daemon.stop()
        if "Traceback" in daemon.log():
            leaked.append(daemon.log())
    assert not leaked, "a daemon logged a traceback:\n" + "\n".join(leaked)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("data")
