"""The server's own CPU time per request, zeusd against the bare waitress+Falcon app.

Usage: python bench/bench_server_cpu.py [--requests 4000] [--rounds 5] [--clients 1,16]
                                         [--compare DIR]

Why: a Python server's threads share one interpreter lock, so with many clients its
throughput is bounded by the CPU time it spends per request (waitress's and the app's),
and `bench_api.py`'s 16-client req/s ratio is close to the ratio of these figures. CPU
time is also steadier than latency on a shared machine. Measured from the server's
/proc/PID/stat (user + system) around a burst of requests from client processes (as
`nobody` when run as root, so zeusd consults its policy), each with one keep-alive
connection; with several clients, client k writes to GPU k % 4. Servers and cases are
interleaved in rounds; the median round is printed, with the ratio to the bare app's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_api import GET_PATH, SET_LATER_PATH, SET_PATH, SPREAD_GPUS, Zeusd, \
    _drop_privileges  # noqa: E402
from tests.support.client import Client  # noqa: E402
from tests.support.daemon import wait_serving  # noqa: E402

CASES = (("get_power_limit", "GET", GET_PATH), ("set_power_limit", "POST", SET_PATH),
         ("set_power_limit nb", "POST", SET_LATER_PATH))
WARM_UP = 200


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def burst(address: str, pid: int, method: str, path: str, requests: int, clients: int) -> float:
    """Server CPU µs per request over ``requests`` requests from ``clients`` processes."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    children = []
    for k in range(clients):
        child = os.fork()
        if child == 0:  # pragma: no cover - the client process
            try:
                _drop_privileges()
                client = Client(address)
                mine = path if method == "GET" else \
                    path.replace("gpu_ids=0", f"gpu_ids={k % SPREAD_GPUS}")  # as bench_api
                for i in range(WARM_UP):
                    client.request(method, mine.format(v=300000 + 10000 * (i % 2)))
                os.write(ready_w, b"r")
                os.read(go_r, 1)
                for i in range(requests // clients):
                    reply = client.request(method, mine.format(v=300000 + 10000 * (i % 2)))
                    if reply.status != 200:
                        os._exit(1)
                os._exit(0)
            except BaseException:  # noqa: BLE001
                os._exit(2)
        children.append(child)
    for _ in children:
        os.read(ready_r, 1)
    time.sleep(0.05)
    before = cpu_s(pid)
    os.write(go_w, b"g" * clients)
    failed = [os.waitpid(child, 0)[1] for child in children]
    spent = cpu_s(pid) - before
    for fd in (ready_r, ready_w, go_r, go_w):
        os.close(fd)
    if any(failed):
        raise SystemExit(f"a client failed ({method} {path})")
    return spent / (requests // clients * clients) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="per case and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--compare", metavar="DIR",
                        help="also measure the zeusd of this source tree, in the same rounds")
    args = parser.parse_args()
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        bare_socket = f"{tmp}/bare.sock"
        bare = subprocess.Popen([sys.executable, str(REPO / "bench" / "bare_app.py"),
                                 bare_socket, str(args.threads)], env=env)
        servers = [("zeusd", Zeusd(Path(tmp), args.threads, env, f"h200x{SPREAD_GPUS}"))]
        if args.compare:
            servers.append(("before", Zeusd(Path(tmp), args.threads, env, f"h200x{SPREAD_GPUS}",
                                            "before", Path(args.compare).resolve())))
        try:
            wait_serving(bare_socket, bare)
            for _, server in servers:
                wait_serving(server.socket, server.proc)
            print(f"# server CPU µs per request (user + system, /proc), {args.rounds} "
                  f"interleaved rounds of {args.requests} requests, median round; waitress "
                  f"threads {args.threads}; before = {args.compare or '-'}")
            print(f"{'server':<8} {'clients':>7} {'case':<20} {'cpu us':>7} {'/bare':>6}")
            for clients in (int(c) for c in args.clients.split(",")):
                samples: dict = {}
                for _ in range(args.rounds):
                    samples.setdefault(("bare", "bare 200"), []).append(
                        burst("unix:" + bare_socket, bare.pid, "GET", GET_PATH, args.requests,
                              clients))
                    for name, method, path in CASES:
                        if clients > 1 and "nb" in name:
                            continue  # 16 clients' non-blocking writes outrun the queues (429)
                        for label, server in servers:
                            samples.setdefault((label, name), []).append(
                                burst("unix:" + server.socket, server.proc.pid, method, path,
                                      args.requests, clients))
                base = statistics.median(samples[("bare", "bare 200")])
                for (label, name), values in samples.items():
                    value = statistics.median(values)
                    print(f"{label:<8} {clients:>7} {name:<20} {value:>7.0f} {value / base:>6.2f}")
        finally:
            for proc in [bare] + [server.proc for _, server in servers]:
                proc.terminate()
                proc.wait()


if __name__ == "__main__":
    main()
