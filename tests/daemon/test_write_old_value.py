"""With leases off, a write's audited old value still comes from what zeusd last wrote
(no driver read, which costs ~170 µs on an H200); only the first write to a knob reads it."""

from __future__ import annotations

import re

from tests.support.checks import assert_ok_empty, query
from tests.support.sim import SimGpus

SET_LIMIT = "nvmlDeviceSetPowerManagementLimit"


def olds(log: str) -> list[tuple[str, str, str]]:
    """(old_value, old_value_source, outcome) of every audited set_power_limit."""
    return re.findall(r'operation=set_power_limit .*?old_value="([^"]*)" '
                      r'old_value_source=(\S+) new_value="[^"]*" outcome=("?[a-z]+)', log)


def test_old_values_come_from_zeusds_last_write_after_the_first(start_zeusd, module_tmp):
    gpus = SimGpus(module_tmp, count=1, name="olds",
                   faults=[{"gpu": 0, "call": SET_LIMIT, "error": "UNKNOWN", "after_calls": 2,
                            "times": 1}])
    zd = start_zeusd(gpus=gpus)
    assert "leases are off" in zd.log()
    for value in (310_000, 320_000):
        assert_ok_empty(zd.post(query("/gpu/set_power_limit", gpu_ids="0",
                                      power_limit_mw=value, block=True)))
    assert zd.post(query("/gpu/set_power_limit", gpu_ids="0", power_limit_mw=330_000,
                         block=True)).status == 500  # the injected failure: nothing changed
    assert_ok_empty(zd.post(query("/gpu/set_power_limit", gpu_ids="0", power_limit_mw=340_000,
                                  block=True)))
    assert olds(zd.log()) == [("700000 mW", "gpu", "applied"),
                              ("310000 mW", "zeusd_last_write", "applied"),
                              ("320000 mW", "zeusd_last_write", '"failed'),
                              ("320000 mW", "zeusd_last_write", "applied")]
