"""Per-request gate: API group first (404), then bearer-token auth (401/403)."""

from __future__ import annotations

import dataclasses
import logging

import falcon

from ..auth.tokens import TokenError, decode
from ..errors import NotEnabled, ScopeMissing, Unauthenticated
from .errors import mark_legacy
from .respond import caller_in

log = logging.getLogger(__name__)
_BEARER = "Bearer "


class Gate:
    """Resources declare ``group`` (None = service route that never needs a token)."""

    def __init__(self, enabled_groups: frozenset[str], signing_key: bytes | None) -> None:
        self.enabled_groups = enabled_groups
        self.signing_key = signing_key

    def process_resource(self, req: falcon.Request, resp, resource, params) -> None:
        self._admit(req, resource)
        mark_legacy(req, resource)

    def _admit(self, req: falcon.Request, resource) -> None:
        caller = caller_in(req.env)  # the one reading of the transport's caller
        req.context.caller = caller
        group = getattr(resource, "group", None)
        if group is not None and group not in self.enabled_groups:
            raise NotEnabled(f"API group '{group}' is not enabled on this server.")
        if self.signing_key is None:
            return
        if not getattr(resource, "needs_token", group is not None):
            self._optional_claims(req, caller)  # /discover may still say who the token is
            return
        claims = self._claims(req)
        req.context.claims = claims
        req.context.caller = dataclasses.replace(
            caller, token_subject=claims.sub, token_scopes=claims.scopes)
        log.debug("Authenticated request user=%s", claims.sub)
        if group is not None and group not in claims.scopes:
            raise ScopeMissing(
                f"Token for user '{claims.sub}' lacks required scope '{group}'. "
                f"Token scopes: {list(claims.scopes)}")

    def _optional_claims(self, req: falcon.Request, caller) -> None:
        if req.get_header("Authorization") is None:
            return
        try:
            claims = self._claims(req)
        except Unauthenticated:
            return  # service routes never need a token; a bad one is simply ignored
        req.context.caller = dataclasses.replace(
            caller, token_subject=claims.sub, token_scopes=claims.scopes)

    def _claims(self, req: falcon.Request):
        header = req.get_header("Authorization")
        if header is None:
            raise Unauthenticated(
                "Authentication required. Provide an Authorization: Bearer <token> header.")
        if not header.startswith(_BEARER):
            raise Unauthenticated("Invalid token: expected 'Bearer <token>'")
        try:
            return decode(self.signing_key, header[len(_BEARER):])
        except TokenError as exc:
            if exc.expired:
                raise Unauthenticated("Token has expired.") from None
            raise Unauthenticated(f"Invalid token: {exc.reason}") from None
