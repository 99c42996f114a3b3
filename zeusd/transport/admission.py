"""Who may hold a connection, decided once when it is accepted, before anything is read.

Every local user can reach the socket, so connection slots are a shared resource:
each peer (a Unix uid, or a TCP address) may hold at most ``per_peer`` of them, and
callers without any write grant share ``total - reserved`` slots, so root and the
policy's members always find a slot free. A refused connection gets one short
HTTP answer and is closed at once: it never reaches a worker thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

from .. import operations as ops
from ..identity import Caller
from ..limits import ServeLimits

log = logging.getLogger(__name__)
_WRITES = frozenset(ops.GPU_WRITE_OPERATIONS)


def peer_key(caller: Caller, addr) -> str:
    """The unit a per-peer limit counts: the uid on a Unix socket, the address on TCP."""
    if caller.transport == "unix":
        return f"uid {caller.uid}" if caller.known else "unknown unix peer"
    host = addr[0] if isinstance(addr, tuple) and addr else str(addr)
    return f"address {host}"


class MemberCache:
    """Does the policy grant this caller any write? Cached per policy and identity, since it
    is asked on every accept and the answer changes only with a reload."""

    def __init__(self, policy_store) -> None:
        self.policy_store = policy_store
        self._cache: dict = {}
        self._hash = None

    def is_member(self, caller: Caller) -> bool:
        if caller.is_root:
            return True
        if caller.transport != "unix" or not caller.known or self.policy_store is None:
            return False  # TCP identities come with the request's token, after accept
        policy = self.policy_store.current
        if policy.hash != self._hash:
            self._cache, self._hash = {}, policy.hash
        key = (caller.uid, caller.gid, caller.groups)
        if key not in self._cache:
            self._cache[key] = _grants_a_write(policy, caller)
        return self._cache[key]


def _grants_a_write(policy, caller: Caller) -> bool:
    if policy.defaults.operations & _WRITES:
        return True
    return any(rule.grant.operations & _WRITES and rule.subjects.match(caller)
               for rule in policy.rules)


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    member: bool
    status: int = 200
    why: str = ""


class Admission:
    """Connection counts per peer and per class; thread-safe (closes may come from workers)."""

    def __init__(self, limits: ServeLimits, members: MemberCache) -> None:
        self.limits = limits
        self.members = members
        self._lock = threading.Lock()
        self._per_peer: dict[str, int] = {}
        self._total = 0
        self._unprivileged = 0
        self.refused = 0
        self._last_log = 0.0

    def admit(self, caller: Caller, key: str) -> Verdict:
        """Take a slot, or say why not (nothing taken). ``member`` goes back to release()."""
        member = self.members.is_member(caller)
        lim = self.limits
        with self._lock:
            held = self._per_peer.get(key, 0)
            if not caller.is_root and held >= lim.max_connections_per_peer:
                return self._refuse(429, f"{key} already holds {held} connections, the limit "
                                         "per caller; close some or reuse one")
            if self._total >= lim.max_connections:
                return self._refuse(503, f"all {lim.max_connections} connections are in use")
            if not member and self._unprivileged >= lim.max_connections - \
                    lim.reserved_connections:
                return self._refuse(503, "the connections open to callers without a write "
                                         "grant are all in use")
            self._per_peer[key] = held + 1
            self._total += 1
            self._unprivileged += 0 if member else 1
        return Verdict(True, member)

    def _refuse(self, status: int, why: str) -> Verdict:
        self.refused += 1
        return Verdict(False, False, status, why)

    def log_refusal(self, key: str, verdict: Verdict) -> None:
        """One warning per 10 s at most: a flood must not flood the journal too."""
        now = time.monotonic()
        if now - self._last_log >= 10.0:
            self._last_log = now
            log.warning("refused a connection from %s: %s (%d refused so far)", key,
                        verdict.why, self.refused)

    def release(self, key: str, member: bool) -> None:
        with self._lock:
            left = self._per_peer.get(key, 1) - 1
            if left > 0:
                self._per_peer[key] = left
            else:
                self._per_peer.pop(key, None)
            self._total -= 1
            self._unprivileged -= 0 if member else 1


_REASONS = {429: "Too Many Requests", 503: "Service Unavailable"}


def refusal_bytes(verdict: Verdict) -> bytes:
    """A complete response, sent before the request is read; then the connection closes."""
    body = json.dumps({"error": f"Too many connections: {verdict.why}."}).encode()
    head = (f"HTTP/1.1 {verdict.status} {_REASONS[verdict.status]}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body
