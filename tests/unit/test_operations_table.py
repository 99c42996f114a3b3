"""The operations table is the one description of a GPU write: every row must be usable."""

import pytest

from zeusd import operations as ops
from zeusd.devices.base import GpuDevice
from zeusd.leases import knobs
from zeusd.operations import GPU_OPERATIONS, GpuChange
from zeusd.policy.model import Grant


@pytest.mark.parametrize("spec", list(GPU_OPERATIONS.values()), ids=lambda s: s.name)
def test_every_row_names_real_device_methods_and_policy_ranges(spec):
    for method in (spec.setter, spec.getter, *spec.resetters):
        if method is not None:
            assert callable(getattr(GpuDevice, method)), method
    assert (spec.setter is None) != (not spec.resetters)  # a set or a reset, never both
    assert spec.range_key is None or spec.range_key in Grant.__dataclass_fields__
    assert set(spec.knobs) <= set(knobs.KNOBS) and spec.knobs


def test_knob_values_of_sets_and_resets():
    assert GpuChange(ops.SET_POWER_LIMIT, 0, power_limit_mw=200_000).knob_values() == (
        ("power_limit", 200_000),)
    assert GpuChange(ops.SET_GPU_LOCKED_CLOCKS, 0, min_clock_mhz=900,
                     max_clock_mhz=1500).knob_values() == (("gpu_locked_clocks", (900, 1500)),)
    assert GpuChange(ops.RESET_LOCKED_CLOCKS, 0).knob_values() == (
        ("gpu_locked_clocks", None), ("mem_locked_clocks", None))
    assert GpuChange(ops.SET_PERSISTENCE_MODE, 1, enabled=False).knob_values() == (
        ("persistence_mode", False),)


def test_each_knob_has_one_setter_and_clocks_have_no_getter():
    assert ops.KNOB_SETTER.keys() == set(knobs.KNOBS)
    assert ops.KNOB_GETTER[ops.GPU_LOCKED_CLOCKS] is None
    assert ops.KNOB_RESETTER.keys() == {ops.GPU_LOCKED_CLOCKS, ops.MEM_LOCKED_CLOCKS}


def test_share_leases_is_a_rule_key_and_reaches_the_decision():
    from zeusd.identity import Caller
    from zeusd.policy.parse import parse_policy

    policy = parse_policy(b'version = 1\n[[rule]]\nname = "job"\nusers = [1001]\n'
                               b'operations = ["set_power_limit"]\nshare_leases = true\n', "t")
    change = GpuChange(ops.SET_POWER_LIMIT, 0, power_limit_mw=200_000)
    decision = policy.decide_change(Caller("unix", pid=1, uid=1001, gid=1001), change)
    assert (decision.allowed, decision.share_leases, decision.restore_on_exit) == (True, True, True)
    other = policy.decide_change(Caller("unix", pid=1, uid=0, gid=0), change)
    assert other.share_leases is False  # root overrides instead
