"""HS256 JSON Web Tokens with the standard library only.

Upstream's rules: HS256 only; key = the raw bytes of the key file; claims
`sub` (string), `scopes` (API group names; an unknown name invalidates the
token), optional `exp` checked with 60 s leeway; no iss/aud/nbf.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass

from ..operations import API_GROUPS

LEEWAY_S = 60


class TokenError(Exception):
    """Invalid token; ``expired`` tells the two 401 messages apart."""

    def __init__(self, reason: str, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


@dataclass(frozen=True)
class Claims:
    sub: str
    scopes: tuple[str, ...]
    exp: int | None

    def as_json(self) -> dict:
        out: dict = {"sub": self.sub, "scopes": list(self.scopes)}
        if self.exp is not None:
            out["exp"] = self.exp
        return out


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise TokenError("InvalidToken")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(key: bytes, sub: str, scopes: list[str], expires_in_s: int | None) -> str:
    for scope in scopes:
        if scope not in API_GROUPS:
            raise ValueError(f"unknown scope '{scope}' (known: {', '.join(API_GROUPS)})")
    claims: dict = {"sub": sub, "scopes": list(scopes)}
    if expires_in_s is not None:
        claims["exp"] = int(time.time()) + expires_in_s
    header = _b64(json.dumps({"typ": "JWT", "alg": "HS256"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = _b64(hmac.new(key, signing_input, hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


def decode(key: bytes, token: str, now_s: float | None = None) -> Claims:
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("InvalidToken")
    try:
        header = json.loads(_unb64(parts[0]))
        payload = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (ValueError, TypeError):
        raise TokenError("InvalidToken") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise TokenError("InvalidAlgorithm")
    expected = hmac.new(key, f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise TokenError("InvalidSignature")
    return _claims(payload, time.time() if now_s is None else now_s)


def _claims(payload: object, now_s: float) -> Claims:
    if not isinstance(payload, dict):
        raise TokenError("JSON error: expected a map of claims")
    sub, scopes, exp = payload.get("sub"), payload.get("scopes"), payload.get("exp")
    if not isinstance(sub, str):
        raise TokenError("JSON error: missing or invalid field `sub`")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise TokenError("JSON error: missing or invalid field `scopes`")
    for scope in scopes:
        if scope not in API_GROUPS:
            raise TokenError(f"JSON error: unknown variant `{scope}`")
    if exp is not None:
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise TokenError("JSON error: invalid field `exp`")
        if exp + LEEWAY_S < now_s:
            raise TokenError("ExpiredSignature", expired=True)
    return Claims(sub, tuple(scopes), exp)


def parse_duration_s(text: str) -> int | None:
    """`1h`, `7d`, `30d`, `90m`, `never` -> seconds (None = never expires)."""
    if text == "never":
        return None
    match = re.fullmatch(r"(\d+)([smhd])", text)
    if not match:
        raise ValueError(f"invalid duration '{text}' (use e.g. 1h, 7d, 30d or never)")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
