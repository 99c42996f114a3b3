"""Latency and throughput of zeusd against a bare waitress+Falcon app, same run.

Usage: python bench/bench_api.py [--seconds 2] [--rounds 3] [--clients 1,16] [--policy-rules 50]

Each client is its own process with one keep-alive http.client connection over
the Unix socket (as Zeus clients connect). Prints a table with p50/p99 latency,
requests/s, and ratios against the bare app measured in the same run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.client import Client  # noqa: E402
from tests.support.daemon import wait_serving  # noqa: E402

def _client(address: str, method: str, path: str, seconds: float, start_at: float, out) -> None:
    client = Client(address)
    latencies = []
    values = (300000, 310000)
    while time.time() < start_at:
        time.sleep(0.001)
    end = time.perf_counter() + seconds
    i = 0
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        reply = client.request(method, path.format(v=values[i % 2]))
        latencies.append(time.perf_counter() - t0)
        if reply.status != 200:
            out.put(("error", f"{reply.status} {reply.text[:200]}"))
            return
        i += 1
    out.put(("ok", latencies))


def run_case(address: str, method: str, path: str, clients: int, seconds: float) -> dict:
    out: mp.Queue = mp.Queue()
    start_at = time.time() + 0.3
    procs = [mp.Process(target=_client, args=(address, method, path, seconds, start_at, out))
             for _ in range(clients)]
    for p in procs:
        p.start()
    latencies: list[float] = []
    for _ in procs:
        kind, value = out.get(timeout=seconds + 60)
        if kind == "error":
            raise SystemExit(f"request failed: {value}")
        latencies.extend(value)
    for p in procs:
        p.join()
    latencies.sort()
    return {
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99) - 1] * 1e6,
        "rps": len(latencies) / seconds,
    }


def policy_text(rules: int) -> str:
    """A policy with `rules` rules that do not match root, so root falls through them all."""
    lines = []
    for i in range(rules):
        lines += [f'[[rule]]', f'name = "team-{i}"', f'users = [{20000 + i}]',
                  'gpus = "all"', 'operations = ["set_power_limit", "gpu-read"]',
                  'power_limit_w = [200, 600]', '']
    return "\n".join(lines)


def start_servers(tmp: Path, threads: int, rules: int):
    """The bare app, zeusd without a policy file, and (rules > 0) zeusd with `rules` rules."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    addresses, procs = {}, []
    path = str(tmp / "bare.sock")
    procs.append(subprocess.Popen([sys.executable, str(REPO / "bench" / "bare_app.py"), path,
                                   str(threads)], env=env))
    addresses["bare"] = path
    for label, count in (("zeusd", 0), ("zeusd+policy", rules)):
        if label == "zeusd+policy" and not rules:
            continue
        policy = tmp / f"policy-{count}.toml"
        if count:
            policy.write_text(policy_text(count))
            os.chmod(policy, 0o644)
        path = str(tmp / f"{label}.sock")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "zeusd", "serve", "--gpu-backend", "simulated",
             "--simulated-gpus", "h200x2", "--socket-path", path, "--policy", str(policy),
             "--num-workers", str(threads), "--enable", "gpu-control,gpu-read",
             "--log-level", "warning"],
            env=env, stderr=subprocess.DEVNULL))
        addresses[label] = path
    for proc, path in zip(procs, addresses.values()):
        wait_serving(path, proc)
    return {k: "unix:" + v for k, v in addresses.items()}, procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per case and round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="cases are interleaved in rounds; the median round is reported")
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads of every server")
    parser.add_argument("--policy-rules", type=int, default=0,
                        help="also measure zeusd with a policy of N rules that the caller "
                             "falls through (the worst case)")
    args = parser.parse_args()
    cases = [("bare", "bare 200", "GET", "/gpu/get_power_limit?gpu_ids=0")]
    servers = ["zeusd"] + (["zeusd+policy"] if args.policy_rules else [])
    for server in servers:
        cases += [(server, "get_power_limit", "GET", "/gpu/get_power_limit?gpu_ids=0"),
                  (server, "set_power_limit", "POST",
                   "/gpu/set_power_limit?gpu_ids=0&power_limit_mw={v}&block=true")]
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        addresses, procs = start_servers(Path(tmp), args.threads, args.policy_rules)
        try:
            rows = []
            for clients in (int(c) for c in args.clients.split(",")):
                samples: dict = {}
                for _ in range(args.rounds):
                    for server, name, method, path in cases:
                        result = run_case(addresses[server], method, path, clients, args.seconds)
                        samples.setdefault((server, name), []).append(result)
                rows.append((clients, {k: _median(v) for k, v in samples.items()}))
        finally:
            for p in procs:
                p.terminate()
                p.wait()
    print_table(rows, args)


def _median(results: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def print_table(rows, args) -> None:
    print(f"# {args.rounds} interleaved rounds of {args.seconds:g} s per case; median round; "
          f"waitress threads {args.threads}; zeusd+policy = {args.policy_rules} rules")
    print(f"{'server':<13} {'clients':>7} {'case':<16} {'p50 us':>8} {'p99 us':>8} "
          f"{'req/s':>8} {'p50/bare':>9} {'rps/bare':>9} {'p50/nopolicy':>13}")
    for clients, results in rows:
        base = results[("bare", "bare 200")]
        for (server, name), r in results.items():
            plain = results.get(("zeusd", name))
            vs_plain = f"{r['p50_us'] / plain['p50_us']:>13.3f}" if server == "zeusd+policy" \
                else f"{'':>13}"
            print(f"{server:<13} {clients:>7} {name:<16} {r['p50_us']:>8.0f} "
                  f"{r['p99_us']:>8.0f} {r['rps']:>8.0f} {r['p50_us'] / base['p50_us']:>9.2f} "
                  f"{r['rps'] / base['rps']:>9.2f} {vs_plain}")


if __name__ == "__main__":
    main()
