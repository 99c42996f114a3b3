"""Latency and throughput of zeusd against a bare waitress+Falcon app, same run.

Usage: python bench/bench_api.py [--seconds 3] [--clients 1,16] [--policy-rules 50]

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

CASES = {
    "bare 200": ("bare", "GET", "/gpu/get_power_limit?gpu_ids=0"),
    "get_power_limit": ("zeusd", "GET", "/gpu/get_power_limit?gpu_ids=0"),
    "set_power_limit": ("zeusd", "POST", "/gpu/set_power_limit?gpu_ids=0&power_limit_mw={v}&block=true"),
}


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


def wait_socket(path: str, proc: subprocess.Popen) -> None:
    for _ in range(400):
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        if os.path.exists(path):
            try:
                Client("unix:" + path, timeout=2).get("/time")
                return
            except OSError:
                pass
        time.sleep(0.05)
    raise SystemExit(f"no server on {path}")


def policy_text(rules: int) -> str:
    """A policy with `rules` rules that do not match root, so root falls through them all."""
    lines = []
    for i in range(rules):
        lines += [f'[[rule]]', f'name = "team-{i}"', f'users = [{20000 + i}]',
                  'gpus = "all"', 'operations = ["set_power_limit", "gpu-read"]',
                  'power_limit_w = [200, 600]', '']
    return "\n".join(lines)


def start_servers(tmp: Path, threads: int, rules: int):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    bare_path, zeusd_path = str(tmp / "bare.sock"), str(tmp / "zeusd.sock")
    policy = tmp / "policy.toml"
    if rules:
        policy.write_text(policy_text(rules))
        os.chmod(policy, 0o644)
    bare = subprocess.Popen([sys.executable, str(REPO / "bench" / "bare_app.py"), bare_path,
                             str(threads)], env=env)
    zeusd = subprocess.Popen(
        [sys.executable, "-m", "zeusd", "serve", "--gpu-backend", "simulated",
         "--simulated-gpus", "h200x2", "--socket-path", zeusd_path, "--policy", str(policy),
         "--num-workers", str(threads), "--enable", "gpu-control,gpu-read",
         "--log-level", "warning"],
        env=env, stderr=subprocess.DEVNULL)
    wait_socket(bare_path, bare)
    wait_socket(zeusd_path, zeusd)
    return {"bare": "unix:" + bare_path, "zeusd": "unix:" + zeusd_path}, [bare, zeusd]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads of both servers")
    parser.add_argument("--policy-rules", type=int, default=0,
                        help="also measure zeusd with a policy of N non-matching rules")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        configs = [("no policy file", 0)] + ([(f"{args.policy_rules}-rule policy",
                                                args.policy_rules)] if args.policy_rules else [])
        for label, rules in configs:
            sub = Path(tmp) / f"r{rules}"
            sub.mkdir()
            addresses, procs = start_servers(sub, args.threads, rules)
            try:
                for clients in (int(c) for c in args.clients.split(",")):
                    results = {}
                    for name, (server, method, path) in CASES.items():
                        if server == "bare" and rules:
                            continue
                        results[name] = run_case(addresses[server], method, path, clients,
                                                 args.seconds)
                    rows.append((label, clients, results))
            finally:
                for p in procs:
                    p.terminate()
                    p.wait()
    print_table(rows)


def print_table(rows) -> None:
    baseline = {clients: r["bare 200"] for label, clients, r in rows if "bare 200" in r}
    print(f"{'config':<18} {'clients':>7} {'case':<16} {'p50 us':>8} {'p99 us':>8} "
          f"{'req/s':>8} {'p50/bare':>9} {'rps/bare':>9}")
    for label, clients, results in rows:
        base = baseline[clients]
        for name, r in results.items():
            print(f"{label:<18} {clients:>7} {name:<16} {r['p50_us']:>8.0f} {r['p99_us']:>8.0f} "
                  f"{r['rps']:>8.0f} {r['p50_us'] / base['p50_us']:>9.2f} "
                  f"{r['rps'] / base['rps']:>9.2f}")


if __name__ == "__main__":
    main()
