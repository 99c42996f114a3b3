"""Latency and throughput of zeusd against a bare waitress+Falcon app, same run.

Usage: python bench/bench_api.py [--seconds 2] [--rounds 3] [--clients 1,16] [--policy-rules 50]
                                [--compare DIR] [--energy]

Each client is its own process with one keep-alive http.client connection over
the Unix socket (as Zeus clients connect). Run as root, the clients drop to the
unprivileged user `nobody`, so zeusd really consults its policy (root would be
allowed before any rule is read). Cases are interleaved in rounds and the
median round is printed, with ratios against the bare app measured in the same
run: each round's ratio to the bare app of that round, their median over rounds, and
the quartiles of those ratios (how far the machine moved them). With --policy-rules N,
the same zeusd process is switched by SIGHUP between a one-line policy and one where
the caller falls through N rules, round by round, so the comparison is not between two
processes.
With --fixture-latency, each simulated NVML call takes as long as it took on a
real H200 (the p50s of the probe, e.g. 171 µs to read the power limit, 3 ms to
read the energy counter), so the table shows the cost a real node would see.
With --compare DIR, a second zeusd run from the source tree DIR (e.g. an export of
an older commit) is measured in the same rounds: before/after in one run.
Cases: one client reads a limit, sets it blocking and non-blocking; 16 clients
read, and write blocking with client k on GPU k % 4 (spread over 4 GPUs).
--energy instead measures get_cumulative_energy of all GPUs (8 simulated H200s with
fixture latencies unless told otherwise) with 16 clients.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import signal
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

NOBODY = 65534
GET_PATH = "/gpu/get_power_limit?gpu_ids=0"
SET_PATH = "/gpu/set_power_limit?gpu_ids=0&power_limit_mw={v}&block=true"
SET_LATER_PATH = "/gpu/set_power_limit?gpu_ids=0&power_limit_mw={v}&block=false"
SPREAD_SET_PATH = "/gpu/set_power_limit?gpu_ids={g}&power_limit_mw={v}&block=true"
ENERGY_PATH = "/gpu/get_cumulative_energy"
SPREAD_GPUS = 4  # writes of 16 clients go to GPU k % 4


def cases(clients: int, energy: bool, fixture_latency: bool) -> list[tuple[str, str, str]]:
    """(name, method, path) measured at this client count. Non-blocking writes only without
    fixture latencies: with them the writes come faster than the driver takes them (429)."""
    if energy:
        return [("get_cumulative_energy", "GET", ENERGY_PATH)]
    if clients == 1:
        later = [] if fixture_latency else [("set_power_limit nb", "POST", SET_LATER_PATH)]
        return [("get_power_limit", "GET", GET_PATH), ("set_power_limit", "POST", SET_PATH),
                *later]
    return [("get_power_limit", "GET", GET_PATH),
            (f"set {SPREAD_GPUS} GPUs", "POST", SPREAD_SET_PATH)]
SMALL_POLICY = '[defaults]\noperations = ["all"]\nrestore_on_exit = false\n'


def policy_text(rules: int) -> str:
    """`rules` rules for other users, then the defaults: the caller falls through them all."""
    lines = []
    for i in range(rules):
        lines += ["[[rule]]", f'name = "team-{i}"', f"users = [{20000 + i}]", 'gpus = "all"',
                  'operations = ["set_power_limit", "gpu-read", "cpu-read"]', "power_limit_w = [200, 600]",
                  ""]
    return "\n".join(lines) + "\n" + SMALL_POLICY


def _drop_privileges() -> None:
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def _client(address: str, method: str, path: str, seconds: float, start_at: float, out,
            number: int) -> None:
    _drop_privileges()
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
        reply = client.request(method, path.format(v=values[i % 2], g=number % SPREAD_GPUS))
        latencies.append(time.perf_counter() - t0)
        if reply.status != 200:
            out.put(("error", f"{reply.status} {reply.text[:200]}"))
            return
        i += 1
    out.put(("ok", latencies))


def run_case(address: str, method: str, path: str, clients: int, seconds: float) -> dict:
    out: mp.Queue = mp.Queue()
    start_at = time.time() + 0.3
    procs = [mp.Process(target=_client, args=(address, method, path, seconds, start_at, out, k))
             for k in range(clients)]
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


class Zeusd:
    """One zeusd process whose policy file the bench swaps (SIGHUP) between rounds."""

    def __init__(self, tmp: Path, threads: int, env: dict, gpus: str, name: str = "zeusd",
                 source: Path = REPO) -> None:
        self.policy = tmp / f"{name}-policy.toml"
        self.write_policy(SMALL_POLICY)
        self.socket = str(tmp / f"{name}.sock")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zeusd", "serve", "--gpu-backend", "simulated",
             "--simulated-gpus", gpus, "--socket-path", self.socket,
             "--policy", str(self.policy), "--num-workers", str(threads),
             "--enable", "gpu-control,gpu-read", "--log-level", "warning"],
            # `-m` puts the working directory first on sys.path: it picks the source tree.
            env=dict(env, PYTHONPATH=str(source)), cwd=source, stderr=subprocess.DEVNULL)
        self.current = SMALL_POLICY

    def write_policy(self, text: str) -> None:
        staged = self.policy.with_suffix(".new")
        staged.write_text(text)
        os.chmod(staged, 0o644)
        os.replace(staged, self.policy)

    def use(self, text: str) -> None:
        if text == self.current:
            return
        self.write_policy(text)
        self.proc.send_signal(signal.SIGHUP)
        wanted = hashlib.sha256(text.encode()).hexdigest()
        client = Client("unix:" + self.socket)
        for _ in range(200):
            if client.get("/discover").json()["policy"]["policy_hash"] == wanted:
                self.current = text
                return
            time.sleep(0.05)
        raise SystemExit("zeusd did not take the new policy")


def simulated_gpus(tmp: Path, count: int, fixture_latency: bool) -> str:
    """The --simulated-gpus value: a spec string, or a spec file that turns latencies on."""
    if not fixture_latency:
        return f"h200x{count}"
    spec = tmp / "gpus.json"
    spec.write_text(json.dumps({"profile": "h200", "count": count, "latency": "fixture"}))
    return str(spec)


def start_servers(tmp: Path, threads: int, gpus: str, compare: str | None):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    bare_socket = str(tmp / "bare.sock")
    bare = subprocess.Popen([sys.executable, str(REPO / "bench" / "bare_app.py"), bare_socket,
                             str(threads)], env=env)
    zeusd = Zeusd(tmp, threads, env, gpus)
    before = None
    if compare:
        before = Zeusd(tmp, threads, env, gpus, "before", Path(compare).resolve())
    procs = [bare, zeusd.proc] + ([before.proc] if before else [])
    wait_serving(bare_socket, bare)
    for server in (zeusd, before) if before else (zeusd,):
        wait_serving(server.socket, server.proc)
    return "unix:" + bare_socket, zeusd, before, procs


def measure(args) -> list:
    big_policy = policy_text(args.policy_rules) if args.policy_rules else None
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # the clients run as nobody
        gpus = simulated_gpus(Path(tmp), args.gpus, args.fixture_latency)
        bare, zeusd, before, procs = start_servers(Path(tmp), args.threads, gpus, args.compare)
        servers = [(SMALL_POLICY, "zeusd", zeusd), (big_policy, "zeusd+rules", zeusd),
                   (SMALL_POLICY, "before", before)]
        servers = [s for s in servers if s[0] is not None and s[2] is not None]
        try:
            rows = []
            for clients in (int(c) for c in args.clients.split(",")):
                samples: dict = {}

                def run(key, address, method, path):
                    result = run_case(address, method, path, clients, args.seconds)
                    samples.setdefault(key, []).append(result)

                for _ in range(args.rounds):
                    run(("bare", "bare 200"), bare, "GET", GET_PATH)
                    for name, method, path in cases(clients, args.energy, args.fixture_latency):
                        for policy, server, process in servers:
                            process.use(policy)
                            run((server, name), "unix:" + process.socket, method, path)
                rows.append((clients, _summary(samples)))
            return rows
        finally:
            for p in procs:
                p.terminate()
                p.wait()


def _median(results: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def _summary(samples: dict) -> dict:
    """Per case: the median round's figures, and its ratios to the bare app paired round by
    round (each round's figure over the bare app's in that same round, the median of those
    and their spread): the machine's drift between rounds moves both sides of a pair alike."""
    bare = samples[("bare", "bare 200")]
    out = {}
    for key, results in samples.items():
        p50 = sorted(r["p50_us"] / b["p50_us"] for r, b in zip(results, bare))
        rps = sorted(r["rps"] / b["rps"] for r, b in zip(results, bare))
        out[key] = dict(_median(results), p50_ratio=statistics.median(p50),
                        p50_ratio_low=_quartile(p50, 1), p50_ratio_high=_quartile(p50, 3),
                        rps_ratio=statistics.median(rps))
    return out


def _quartile(ordered: list[float], which: int) -> float:
    """The lower (1) or upper (3) quartile, by the nearest rank."""
    return ordered[min(len(ordered) - 1, (len(ordered) * which) // 4)]


def print_table(rows, args) -> None:
    who = "nobody" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# {args.rounds} interleaved rounds of {args.seconds:g} s per case, median round; "
          f"waitress threads {args.threads}; clients run as {who}; zeusd = 1-line policy, "
          f"zeusd+rules = the same process after SIGHUP to {args.policy_rules} rules; "
          f"before = {args.compare or '-'}; load average at the end {load}; "
          f"{args.gpus} simulated H200s, fixture latencies "
          f"{'on' if args.fixture_latency else 'off'}")
    print("# p50/bare, rps/bare: the median over rounds of each round's ratio to the bare app "
          "in that round; quartiles: the middle half of those ratios (the machine's noise)")
    print(f"{'server':<12} {'clients':>7} {'case':<22} {'p50 us':>8} {'p99 us':>8} "
          f"{'req/s':>8} {'p50/bare':>9} {'quartiles':>10} {'rps/bare':>9} {'p50/1-rule':>11}")
    for clients, results in rows:
        for (server, name), r in results.items():
            plain = results.get(("zeusd", name))
            vs_plain = f"{r['p50_us'] / plain['p50_us']:>11.3f}" if server == "zeusd+rules" \
                else f"{'':>11}"
            spread = f"{r['p50_ratio_low']:.2f}-{r['p50_ratio_high']:.2f}"
            print(f"{server:<12} {clients:>7} {name:<22} {r['p50_us']:>8.0f} "
                  f"{r['p99_us']:>8.0f} {r['rps']:>8.0f} {r['p50_ratio']:>9.2f} {spread:>10} "
                  f"{r['rps_ratio']:>9.2f} {vs_plain}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads of both servers")
    parser.add_argument("--policy-rules", type=int, default=0,
                        help="also measure zeusd after a reload to a policy of N rules that "
                             "the caller falls through (the worst case)")
    parser.add_argument("--gpus", type=int, default=SPREAD_GPUS, help="simulated H200s")
    parser.add_argument("--fixture-latency", action="store_true",
                        help="each NVML call sleeps a real H200's measured p50 latency")
    parser.add_argument("--compare", metavar="DIR",
                        help="also measure the zeusd of this source tree, in the same rounds")
    parser.add_argument("--energy", action="store_true",
                        help="get_cumulative_energy of all GPUs, 16 clients, 8 GPUs with "
                             "fixture latencies (unless --gpus/--clients say otherwise)")
    args = parser.parse_args()
    if args.energy:
        args.fixture_latency = True
        args.gpus = 8 if args.gpus == SPREAD_GPUS else args.gpus
        args.clients = "16" if args.clients == "1,16" else args.clients
    print_table(measure(args), args)


if __name__ == "__main__":
    main()
