"""What a policy decision costs, by policy size: the part of a request the policy adds.

Usage: python bench/bench_policy.py [--rules 50] [--repeat 20000]

Decides the same requests against a one-line policy and against one whose caller
falls through N rules (the worst case for first-match order), in the same run,
as an unprivileged caller. The end-to-end effect is measured by
`bench/bench_api.py --policy-rules N`; this isolates it from the noise of a
2-core machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_api import SMALL_POLICY, policy_text  # noqa: E402
from zeusd.identity import Caller  # noqa: E402
from zeusd.operations import GpuChange  # noqa: E402
from zeusd.policy import load_policy  # noqa: E402

CALLER = Caller(transport="unix", pid=4242, uid=65534, gid=65534, groups=(65534,),
                start_time_ticks=1)
CHANGE = GpuChange("set_power_limit", 0, power_limit_mw=300000)


def per_call_us(fn, repeat: int) -> float:
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        samples.append((time.perf_counter() - start) / repeat * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=20000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, text in (("1-line", SMALL_POLICY), (f"{args.rules} rules", policy_text(args.rules))):
            path = os.path.join(tmp, "policy.toml")
            Path(path).write_text(text)
            os.chmod(path, 0o644)
            policy = load_policy(path)
            rows.append((label,
                         per_call_us(lambda: policy.decide_change(CALLER, CHANGE), args.repeat),
                         per_call_us(lambda: policy.decide_read(CALLER, "gpu-read", 0),
                                     args.repeat)))
    print(f"{'policy':<10} {'decide_change us':>17} {'decide_read us':>15}")
    for label, change_us, read_us in rows:
        print(f"{label:<10} {change_us:>17.2f} {read_us:>15.2f}")
    extra = rows[1][1] - rows[0][1]
    print(f"# {args.rules} rules add {extra:+.2f} us to a write's decision "
          f"(a write through zeusd takes ~500 us end to end on this machine)")


if __name__ == "__main__":
    main()
