"""Sign arbitrary JWT claims (including ones zeusd must reject)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

SIGNING_KEY = b"integration-test-signing-key!!!!"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign(claims: dict, key: bytes = SIGNING_KEY, header: dict | None = None) -> str:
    """An HS256 JWT of ``claims``, whatever they contain."""
    head = _b64(json.dumps(header or {"typ": "JWT", "alg": "HS256"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# A policy for token callers: everybody reads; the token subject "alice" may also set power limits.
TOKEN_POLICY = """
[defaults]
operations = ["gpu-read", "cpu-read"]

[[rule]]
name = "alice"
tokens = ["alice"]
operations = ["gpu-read", "cpu-read", "set_power_limit"]
"""
