"""Property: for random policies and requests, the decision is the first matching rule's,
and no value outside that rule's range is ever allowed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zeusd import operations as ops
from zeusd.identity import UNKNOWN_UNIX, Caller
from zeusd.operations import GpuChange
from zeusd.policy.model import OPERATION_SHORTHANDS
from zeusd.policy.parse import parse_policy

UIDS, GIDS, TOKENS, GPUS = [1000, 1001, 1002], [2000, 2001, 2002], ["a", "b"], [0, 1, 2, 3]
OPERATION_WORDS = list(ops.GPU_WRITE_OPERATIONS) + ["gpu-read", "cpu-read"] + list(
    OPERATION_SHORTHANDS)


def toml_list(values) -> str:
    return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in values) + "]"


@st.composite
def ranges(draw, low, high, decimals=False):
    a = draw(st.integers(low, high))
    b = draw(st.integers(a, high))
    if decimals and draw(st.booleans()):
        return [a + 0.5, b + 0.5]  # exact in mW
    return [a, b]


@st.composite
def grants(draw):
    grant = {"operations": draw(st.lists(st.sampled_from(OPERATION_WORDS), max_size=4))}
    for key, low, high, decimals in (("power_limit_w", 50, 700, True),
                                     ("gpu_clock_mhz", 200, 2500, False),
                                     ("mem_clock_mhz", 200, 10000, False)):
        if draw(st.booleans()):
            grant[key] = draw(ranges(low, high, decimals))
    grant["restore_on_exit"] = draw(st.booleans())
    return grant


@st.composite
def rules(draw, index):
    rule = draw(grants())
    rule["name"] = f"r{index}"
    rule["users"] = draw(st.lists(st.sampled_from(UIDS), unique=True, max_size=2))
    rule["groups"] = draw(st.lists(st.sampled_from(GIDS), unique=True, max_size=2))
    rule["tokens"] = draw(st.lists(st.sampled_from(TOKENS), unique=True, max_size=1))
    rule["anonymous"] = draw(st.booleans())
    rule["everyone"] = draw(st.integers(0, 5)) == 0
    gpus = draw(st.lists(st.sampled_from(GPUS), unique=True, min_size=1, max_size=3))
    rule["gpus"] = "all" if draw(st.booleans()) else gpus
    return rule


@st.composite
def policies(draw):
    count = draw(st.integers(0, 6))
    return draw(grants()), [draw(rules(i)) for i in range(count)]


def to_toml(defaults: dict, rule_list: list[dict]) -> str:
    lines = ["[defaults]"] + [f"{k} = {value_text(v)}" for k, v in defaults.items()]
    for rule in rule_list:
        lines += ["", "[[rule]]"] + [f"{k} = {value_text(v)}" for k, v in rule.items()]
    return "\n".join(lines) + "\n"


def value_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return toml_list(value)


callers = st.one_of(
    st.builds(lambda uid, gid, groups: Caller("unix", pid=7, uid=uid, gid=gid,
                                              groups=tuple(groups)),
              st.sampled_from(UIDS + [1500]), st.sampled_from(GIDS + [2500]),
              st.lists(st.sampled_from(GIDS), max_size=2)),
    st.builds(lambda sub: Caller("tcp", token_subject=sub), st.sampled_from(TOKENS + ["z"])),
    st.just(Caller("tcp")),
    st.just(Caller("unix", pid=1, uid=0, gid=0)),
    st.just(UNKNOWN_UNIX),
)

changes = st.one_of(
    st.builds(lambda g, mw: GpuChange(ops.SET_POWER_LIMIT, g, power_limit_mw=mw),
              st.integers(0, 4), st.integers(0, 800_000)),
    st.builds(lambda op, g, a, b: GpuChange(op, g, min_clock_mhz=a, max_clock_mhz=b),
              st.sampled_from([ops.SET_GPU_LOCKED_CLOCKS, ops.SET_MEM_LOCKED_CLOCKS]),
              st.integers(0, 4), st.integers(0, 11000), st.integers(0, 11000)),
    st.builds(lambda op, g: GpuChange(op, g),
              st.sampled_from([ops.RESET_LOCKED_CLOCKS, ops.RESET_GPU_LOCKED_CLOCKS,
                               ops.RESET_MEM_LOCKED_CLOCKS]), st.integers(0, 4)),
    st.builds(lambda g, on: GpuChange(ops.SET_PERSISTENCE_MODE, g, enabled=on),
              st.integers(0, 4), st.booleans()),
)


def reference_match(rule: dict, caller: Caller, gpu: int) -> bool:
    """Written independently of the implementation, straight from the policy semantics in policy/README.md."""
    if rule["gpus"] != "all" and gpu not in rule["gpus"]:
        return False
    anonymous = caller.transport != "unix" and caller.token_subject is None
    if rule["everyone"] and not anonymous:  # every identified caller, never anonymous TCP
        return True
    if caller.transport == "unix":
        return (caller.uid in rule["users"] or caller.gid in rule["groups"]
                or any(g in rule["groups"] for g in caller.groups))
    if caller.token_subject is None:
        return rule["anonymous"]
    return caller.token_subject in rule["tokens"]


def expand(words: list[str]) -> set[str]:
    out: set[str] = set()
    for word in words:
        out.update(OPERATION_SHORTHANDS.get(word, (word,)))
    return out


def within(grant: dict, change: GpuChange) -> bool:
    key, values = {
        ops.SET_POWER_LIMIT: ("power_limit_w", [change.power_limit_mw]),
        ops.SET_GPU_LOCKED_CLOCKS: ("gpu_clock_mhz", [change.min_clock_mhz, change.max_clock_mhz]),
        ops.SET_MEM_LOCKED_CLOCKS: ("mem_clock_mhz", [change.min_clock_mhz, change.max_clock_mhz]),
    }.get(change.operation, (None, []))
    if key is None or key not in grant:
        return True
    scale = 1000 if key == "power_limit_w" else 1
    low, high = (round(bound * scale) for bound in grant[key])
    return all(low <= value <= high for value in values)


@settings(max_examples=200, deadline=None)
@given(policies(), callers, changes)
def test_decision_is_the_first_matching_rules_and_respects_its_range(spec, caller, change):
    defaults, rule_list = spec
    policy = parse_policy(to_toml(defaults, rule_list).encode(), "property.toml")
    decision = policy.decide_change(caller, change)
    if not caller.known:
        assert not decision.allowed and decision.rule == "unknown-caller"
        return
    if caller.is_root:
        assert decision.allowed and decision.rule == "root"
        return
    matched = next((r for r in rule_list if reference_match(r, caller, change.gpu_index)), None)
    grant = matched if matched is not None else defaults
    assert decision.rule == (matched["name"] if matched else "default")
    expected = change.operation in expand(grant["operations"]) and within(grant, change)
    assert decision.allowed == expected, (decision, grant, change)
    if decision.allowed:
        assert decision.restore_on_exit == grant.get("restore_on_exit", True)
        assert within(grant, change)  # never a value outside the deciding rule's range
    elif decision.allowed_range is not None:
        assert not within(grant, change)


@settings(max_examples=100, deadline=None)
@given(policies(), callers, st.sampled_from([ops.GPU_READ, ops.CPU_READ]),
       st.one_of(st.none(), st.integers(0, 4)))
def test_reads_follow_the_first_matching_rule(spec, caller, group, gpu_index):
    defaults, rule_list = spec
    policy = parse_policy(to_toml(defaults, rule_list).encode(), "property.toml")
    decision = policy.decide_read(caller, group, gpu_index)
    if not caller.known or caller.is_root:
        assert decision.allowed == caller.is_root
        return
    # CPU reads and "all GPUs" are decided only by rules covering every GPU.
    index = gpu_index if group == ops.GPU_READ else None
    matched = next((r for r in rule_list if (r["gpus"] == "all" or index in r["gpus"])
                    and reference_match({**r, "gpus": "all"}, caller, 0)), None)
    grant = matched if matched is not None else defaults
    assert decision.rule == (matched["name"] if matched else "default")
    assert decision.allowed == (group in expand(grant["operations"]))
