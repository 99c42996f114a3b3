"""HS256 JSON Web Tokens, verified by PyJWT before anything in them is trusted.

Upstream's rules: HS256 only; key = the raw bytes of the key file; claims
`sub` (string), `scopes` (API group names; an unknown name invalidates the
token), optional `exp` checked with 60 s leeway; no iss/aud/nbf/iat checks.

Order matters for a daemon that anyone may send a token to: the token's size
and its header's size are bounded first, PyJWT's JWS layer then checks the
algorithm and the signature, and only a payload that carries our signature is
parsed as JSON. An attacker's payload is never decoded.
"""

from __future__ import annotations

import functools
import json
import re
import time
import warnings
from dataclasses import dataclass

from ..operations import API_GROUPS

LEEWAY_S = 60
ALGORITHM = "HS256"
# A token zeusd issues is ~200 bytes and its header segment 36; anything far larger is
# not ours. The header is parsed (by PyJWT) before the signature can be checked, so
# its size also bounds how deeply it can nest.
MAX_TOKEN_CHARS = 8192
MAX_HEADER_CHARS = 512


@functools.cache
def _pyjwt():
    """PyJWT and our JWS verifier, imported on first use: a daemon without a signing key
    never needs them, and importing PyJWT costs a socket-activated start ~3 ms."""
    import jwt

    # Upstream accepts a key file of any length, and so do we. Newer PyJWT warns about keys
    # under 32 bytes on every use; the warning says nothing a request could act on.
    if hasattr(jwt, "warnings") and hasattr(jwt.warnings, "InsecureKeyLengthWarning"):
        warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)
    return jwt, jwt.PyJWS(algorithms=[ALGORITHM])


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


def issue(key: bytes, sub: str, scopes: list[str], expires_in_s: int | None) -> str:
    for scope in scopes:
        if scope not in API_GROUPS:
            raise ValueError(f"unknown scope '{scope}' (known: {', '.join(API_GROUPS)})")
    claims: dict = {"sub": sub, "scopes": list(scopes)}
    if expires_in_s is not None:
        claims["exp"] = int(time.time()) + expires_in_s
    jwt, _ = _pyjwt()
    try:
        return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"typ": "JWT"})
    except jwt.PyJWTError as exc:  # e.g. a PEM key file: PyJWT refuses it for HMAC
        raise ValueError(f"cannot sign with this key: {exc}") from None


def decode(key: bytes, token: str, now_s: float | None = None) -> Claims:
    payload = _verified_payload(key, token)
    try:
        claims = json.loads(payload)
    except (ValueError, RecursionError):
        raise TokenError("JSON error: expected a map of claims") from None
    return _claims(claims, time.time() if now_s is None else now_s)


def _verified_payload(key: bytes, token: str) -> bytes:
    """The payload bytes, once the algorithm and signature are checked; not parsed."""
    if len(token) > MAX_TOKEN_CHARS or len(token.partition(".")[0]) > MAX_HEADER_CHARS:
        raise TokenError("InvalidToken")
    jwt, jws = _pyjwt()
    try:
        return jws.decode(token, key, algorithms=[ALGORITHM])
    except jwt.InvalidAlgorithmError:
        raise TokenError("InvalidAlgorithm") from None
    except jwt.InvalidSignatureError:
        raise TokenError("InvalidSignature") from None
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        # Malformed segments, base64 or header JSON; a key PyJWT refuses to use.
        raise TokenError("InvalidToken") from None


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
    match = re.fullmatch(r"(\d{1,9})([smhd])", text)
    if not match:
        raise ValueError(f"invalid duration '{text}' (use e.g. 1h, 7d, 30d or never)")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
