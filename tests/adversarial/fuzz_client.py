"""The fuzzer itself: runs as an unprivileged user, talks raw HTTP/1.1 to zeusd's Unix socket.

Usage (test_fuzz.py runs it through setpriv):
    python fuzz_client.py SOCKET JOURNAL SEED COUNT SECONDS [KEY_HEX]

Every request is generated from ``random.Random(SEED)``: a valid request for a random route,
then 0-3 mutations of its request line, path, query, headers, body or token. Each goes on its
own connection (sent whole, then the write side is shut, so a request the daemon cannot
complete is closed, not waited for). Checked for every answer:

- no 500 status line and no Python traceback text anywhere in the bytes;
- the daemon still accepts connections;
- a request answered without any 2xx changes nothing: the simulated GPUs' journal has
  the same number of lines before and after it (after a 2xx write, a read of every GPU
  is a barrier: reads queue behind the GPUs' pending commands).

Prints one JSON object: counts, the status mix, and the failures (with seed and index).
Standard library only, plus tests.support.tokens (also standard library).
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.support.tokens import sign  # noqa: E402

READ_TIMEOUT_S = 5.0  # per request, all reads together
_STATUS = re.compile(rb"HTTP/\d\.\d (\d{3})")
_LEAKS = (b"Traceback", b'File "', b"Exceeds the limit", b"RecursionError")

WRITES = {  # query-style writes and their extra parameters
    "set_power_limit": ("power_limit_mw",),
    "set_persistence_mode": ("enabled",),
    "set_gpu_locked_clocks": ("min_clock_mhz", "max_clock_mhz"),
    "set_mem_locked_clocks": ("min_clock_mhz", "max_clock_mhz"),
    "reset_gpu_locked_clocks": (),
    "reset_mem_locked_clocks": (),
    "reset_locked_clocks": (),
}
LEGACY = ("set_power_limit", "set_persistence_mode", "set_persistent_mode",
          "set_gpu_locked_clocks", "set_mem_locked_clocks", "reset_gpu_locked_clocks",
          "reset_mem_locked_clocks")
READS = ("get_power", "get_cumulative_energy", "get_power_limit", "get_power_limit_constraints",
         "get_persistence_mode")
SCOPES = ("gpu-control", "gpu-read", "cpu-read")


class Generator:
    """Valid requests for every route, and the mutations applied to them."""

    def __init__(self, rng: random.Random, key: bytes | None) -> None:
        self.rng = rng
        self.key = key

    # -- values -------------------------------------------------------------------------

    def number(self) -> str:
        r = self.rng
        return r.choice([
            str(r.randint(0, 4)), str(r.randint(100_000, 800_000)), str(r.randint(200, 3500)),
            "0", "4294967295", "4294967296", "-1", "+1", "1_0", "1.5", "1e3", "", " 7",
            "9" * r.choice([11, 20, 400, 4301, 6000]), "0" * 5000 + "1", "\u0663", "%00",
            "%ff", "%", "true", "NaN", "inf", "0x10", "1,2", "18446744073709551616"])

    def ids(self) -> str:
        r = self.rng
        if r.random() < 0.6:
            return ",".join(str(r.randint(0, 4)) for _ in range(r.randint(1, 3)))
        return r.choice(["", ",", "0,,1", " 0 , 1 ", "0,1,2,3", "0," * 3000 + "0", "x",
                         self.number(), f"0,{self.number()}"])

    def boolean(self) -> str:
        return self.rng.choice(["true", "false"] * 4 + ["True", "1", "", "yes", "%74rue"])

    # -- requests -----------------------------------------------------------------------

    def valid(self) -> tuple[str, str, dict, bytes]:
        """(method, target, headers, body) of a well-formed request for a random route."""
        r = self.rng
        kind = r.choice(["write", "write", "read", "cpu", "legacy", "legacy", "legacy_cpu",
                         "service", "stream"])
        headers = {"Host": "localhost"}
        if kind == "write":
            op = r.choice(list(WRITES))
            params = [("gpu_ids", self.ids())]
            for name in WRITES[op]:
                params.append((name, self.boolean() if name == "enabled" else self._value(name)))
            params.append(("block", "true" if r.random() < 0.8 else "false"))
            return "POST", f"/gpu/{op}?{self._query(params)}", headers, b""
        if kind == "read":
            params = [("gpu_ids", self.ids())] if r.random() < 0.5 else []
            return "GET", f"/gpu/{r.choice(READS)}?{self._query(params)}", headers, b""
        if kind == "cpu":
            if r.random() < 0.5:
                query = self._query([("cpu", self.boolean()), ("dram", self.boolean())])
                return "GET", f"/cpu/get_cumulative_energy?{query}", headers, b""
            return "GET", "/cpu/get_power?cpu_ids=0", headers, b""
        if kind == "legacy":
            op = r.choice(LEGACY)
            body = self._legacy_body(op)
            headers["Content-Type"] = "application/json"
            return "POST", f"/gpu/{r.choice(['0', '1', '2', '5'])}/{op}", headers, body
        if kind == "legacy_cpu":
            if r.random() < 0.5:
                return "GET", "/cpu/0/supports_dram_energy", headers, b""
            body = json.dumps({"cpu": r.random() < 0.5, "dram": r.random() < 0.5}).encode()
            return "POST", "/cpu/0/get_index_energy", headers, body
        if kind == "stream":
            path = r.choice(["/gpu/stream_power", "/gpu/stream_power?snapshot=true",
                             "/gpu/stream_power?gpu_ids=0", "/cpu/stream_power"])
            return "GET", path, headers, b""
        return "GET", r.choice(["/discover", "/time", "/auth/whoami"]), headers, b""

    def _value(self, name: str) -> str:
        r = self.rng
        if r.random() < 0.7:
            low, high = (150_000, 750_000) if name.endswith("_mw") else (200, 4000)
            return str(r.randint(low, high))
        return self.number()

    def _query(self, params: list[tuple[str, str]]) -> str:
        return "&".join(f"{k}={v}" for k, v in params)

    def _legacy_body(self, op: str) -> bytes:
        r = self.rng
        body: dict = {"block": r.random() < 0.8}
        if op == "set_power_limit":
            body["power_limit_mw"] = r.randint(150_000, 750_000)
        elif op in ("set_persistence_mode", "set_persistent_mode"):
            body["enabled"] = r.random() < 0.5
        elif op.startswith("set_"):
            body["min_clock_mhz"] = r.randint(200, 2000)
            body["max_clock_mhz"] = r.randint(1000, 4000)
        return json.dumps(body).encode()

    # -- tokens -------------------------------------------------------------------------

    def token(self) -> str:
        r = self.rng
        claims = {"sub": r.choice(["alice", "fuzzer", "", "x" * 300]),
                  "scopes": r.sample(SCOPES, r.randint(0, 3))}
        if r.random() < 0.5:
            claims["exp"] = int(time.time()) + r.choice([3600, -3600, -30, 10**12])
        key = self.key or b"no-key"
        choice = r.randrange(10)
        if choice < 4:
            return sign(claims, key)
        if choice == 4:
            return sign(claims, b"wrong-key")
        if choice == 5:
            return sign(claims, key, header={"alg": r.choice(["none", "HS512", "RS256", ""])})
        if choice == 6:
            return sign({"sub": "a", "scopes": [r.choice(["root", 1, None])] + ["x"]}, key)
        if choice == 7:
            deep = "[" * r.choice([200, 2000, 5000]) + "]" * 10
            return self._b64(deep.encode()) + ".e30." + self._b64(os.urandom(32))
        token = sign(claims, key)
        return self._mutate_text(token)

    @staticmethod
    def _b64(data: bytes) -> str:
        import base64

        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    # -- mutations ----------------------------------------------------------------------

    def _mutate_text(self, text: str) -> str:
        r = self.rng
        if not text:
            return r.choice(["\x00", "%", "\u00e9", "9" * 5000])
        i = r.randrange(len(text))
        return r.choice([
            text[:i] + text[i + 1:],
            text[:i] + r.choice("\x00%&=;,+.#?/\\ \t\u00e9\u0663\ud7ff") + text[i:],
            text[:i] + text[i] * r.choice([2, 100, 5000]) + text[i + 1:],
            text[:i],
            text + text[i:],
        ])

    def request(self) -> bytes:
        """A valid request with 0-3 mutations, as the bytes sent."""
        r = self.rng
        method, target, headers, body = self.valid()
        version = "HTTP/1.1"
        if self.key is not None and r.random() < 0.85:
            headers["Authorization"] = "Bearer " + self.token()
        for _ in range(r.choice([0, 1, 1, 2, 3])):
            mutation = r.randrange(10)
            if mutation == 0:
                method = r.choice(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH",
                                   "get", "G\x00T", "X" * 300, ""])
            elif mutation in (1, 2):
                target = self._mutate_target(target)
            elif mutation == 3:
                version = r.choice(["HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", "HTTP/9", "", "http/1.1"])
            elif mutation in (4, 5):
                self._mutate_headers(headers)
            elif mutation in (6, 7):
                body = self._mutate_body(body)
            elif mutation == 8 and "Authorization" in headers:
                headers["Authorization"] = r.choice([
                    "Bearer " + self.token(), "bearer " + self.token(), "Basic YTpi", "Bearer",
                    "Bearer " + "a" * r.choice([10, 9000, 70_000]), self._mutate_text(
                        headers["Authorization"])])
            else:
                target = target + r.choice(["&x=1", "&block=true", "&gpu_ids=0", "&", "#f",
                                            "&" * 40, "&" + "&".join(f"f{i}=1" for i in
                                                                     range(100))])
        return self._encode(method, target, version, headers, body)

    def _mutate_target(self, target: str) -> str:
        r = self.rng
        path, _, query = target.partition("?")
        choice = r.randrange(6)
        if choice == 0 and query:
            pairs = query.split("&")
            i = r.randrange(len(pairs))
            key, _, _ = pairs[i].partition("=")
            pairs[i] = f"{key}={self.number()}"
            return f"{path}?{'&'.join(pairs)}"
        if choice == 1 and path.count("/") >= 1:
            segments = path.split("/")
            i = r.randrange(1, len(segments))
            segments[i] = r.choice([self.number(), "..", "", "%2e%2e", segments[i] * 2,
                                    "\u0663", "+2", "0_1", "%30", "-1"])
            return "/".join(segments) + (f"?{query}" if query else "")
        if choice == 2:
            return r.choice(["*", "", "http://localhost" + target, "//" + target, target + "/",
                             "/" + "a" * 70_000, target.upper()])
        if choice == 3 and query:
            pairs = query.split("&")
            r.shuffle(pairs)
            if r.random() < 0.5:
                pairs.append(r.choice(pairs))  # a duplicate
            else:
                pairs.pop()
            return f"{path}?{'&'.join(pairs)}"
        return self._mutate_text(target)

    def _mutate_headers(self, headers: dict) -> None:
        r = self.rng
        name, value = r.choice([
            # (5000 digits: past Python's int-string limit, answered 400 by zeusd's parser)
            ("Content-Length", r.choice(["abc", "-1", "9" * 30, "9" * 5000, "0", "5", " 2",
                                         "\u0663"])),
            ("Transfer-Encoding", r.choice(["chunked", "gzip", "chunked, chunked"])),
            ("Content-Type", r.choice(["text/plain", "application/json; charset=latin-1", "",
                                       "multipart/form-data; boundary=x"])),
            ("Expect", "100-continue"),
            ("Connection", r.choice(["close", "keep-alive", "upgrade"])),
            ("X-" + "a" * r.choice([1, 100]), "v" * r.choice([1, 1000, 70_000])),
            ("Host", r.choice(["", "a" * 1000, "evil:99999"])),
            ("Bad Header", "x"), ("\u00e9", "\u00e9"), ("X-Null", "a\x00b"),
        ])
        headers[name] = value

    def _mutate_body(self, body: bytes) -> bytes:
        r = self.rng
        choice = r.randrange(7)
        if choice == 0:
            return os.urandom(r.choice([1, 10, 500]))
        if choice == 1:
            return b"[" * r.choice([129, 1000, 100_000])
        if choice == 2:
            return b'{"power_limit_mw": ' + b"9" * r.choice([20, 5000]) + b', "block": true}'
        if choice == 3:
            return r.choice([b'{"power_limit_mw": NaN, "block": true}', b"null", b"[]", b'""',
                             b'{"block": "true"}', b'{"enabled": 1, "block": true}'])
        if choice == 4 and body:
            i = r.randrange(len(body))
            return body[:i] + bytes([body[i] ^ (1 << r.randrange(8))]) + body[i + 1:]
        if choice == 5:
            return body[: r.randrange(len(body) + 1)]
        return body + b" " * r.choice([1, 100_000])

    @staticmethod
    def _encode(method: str, target: str, version: str, headers: dict, body: bytes) -> bytes:
        if body and "Content-Length" not in headers and "Transfer-Encoding" not in headers:
            headers["Content-Length"] = str(len(body))
        lines = [f"{method} {target} {version}".rstrip()] + [f"{k}: {v}" for k, v in
                                                            headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass")
        return head + body


def exchange(socket_path: str, data: bytes) -> bytes | None:
    """Send one request on a new connection; the answer's bytes (b"" if closed unanswered),
    or None if the daemon accepted no connection."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(READ_TIMEOUT_S)
    try:
        sock.connect(socket_path)
    except OSError:
        sock.close()
        return None
    out = bytearray()
    deadline = time.monotonic() + READ_TIMEOUT_S
    try:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the daemon refused it early (e.g. 431); read what it said
        while len(out) < 1 << 20 and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk or _is_open_stream(out + chunk):
                out += chunk
                break
            out += chunk
    except OSError:
        pass  # timeout or reset: judge what arrived
    finally:
        sock.close()
    return bytes(out)


def _is_open_stream(received: bytes) -> bool:
    """An SSE stream has begun: it runs as long as we read, so its head is the answer."""
    head, sep, _ = bytes(received[:8192]).partition(b"\r\n\r\n")
    return bool(sep) and b"text/event-stream" in head


def journal_lines(path: str) -> int:
    try:
        with open(path, "rb") as file:
            return file.read().count(b"\n")
    except FileNotFoundError:
        return 0


def run(socket_path: str, journal: str, seed: int, count: int, seconds: float,
        key: bytes | None) -> dict:
    rng = random.Random(seed)
    gen = Generator(rng, key)
    statuses: dict[str, int] = {}
    failures: list[dict] = []
    deadline = time.monotonic() + seconds
    sent = 0
    lines = journal_lines(journal)
    barrier = _barrier(key)
    while sent < count and time.monotonic() < deadline and len(failures) < 20:
        data = gen.request()
        answer = exchange(socket_path, data)
        sent += 1
        if answer is None:
            failures.append(_failure(seed, sent, data, b"", "the daemon accepted no connection"))
            break
        codes = [int(code) for code in _STATUS.findall(answer[:4096])]
        final = [code for code in codes if code >= 200]  # past any 100 Continue
        key_ = str(final[0]) if final else (
            "100 Continue, then closed" if codes else "closed without an answer")
        statuses[key_] = statuses.get(key_, 0) + 1
        problem = _problem(answer, codes)
        if any(200 <= code < 300 for code in codes):
            if data.startswith(b"POST"):  # let every queued command land before the next mark
                exchange(socket_path, barrier)
        else:
            now = journal_lines(journal)
            if now != lines:
                problem = problem or f"rejected, yet the GPU journal grew by {now - lines} lines"
        lines = journal_lines(journal)
        if problem:
            failures.append(_failure(seed, sent, data, answer, problem))
    return {"seed": seed, "uid": os.getuid(), "requests": sent, "statuses": dict(sorted(statuses.items())),
            "failures": failures}


def _barrier(key: bytes | None) -> bytes:
    """A read of every GPU: it queues behind their pending commands."""
    auth = f"Authorization: Bearer {sign({'sub': 'b', 'scopes': ['gpu-read']}, key)}\r\n" \
        if key else ""
    return f"GET /gpu/get_power_limit HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()


def _problem(answer: bytes, codes: list[int]) -> str | None:
    if 500 in codes:
        return "a 500"
    for leak in _LEAKS:
        if leak in answer:
            return f"{leak.decode()!r} in the answer"
    return None


def _failure(seed: int, index: int, data: bytes, answer: bytes, problem: str) -> dict:
    return {"seed": seed, "index": index, "problem": problem, "request": repr(data[:600]),
            "answer": repr(answer[:600])}


if __name__ == "__main__":
    sock_path, journal_path, seed_text, count_text, seconds_text = sys.argv[1:6]
    signing_key = bytes.fromhex(sys.argv[6]) if len(sys.argv) > 6 else None
    print(json.dumps(run(sock_path, journal_path, int(seed_text), int(count_text),
                         float(seconds_text), signing_key)))
