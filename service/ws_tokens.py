"""Short-lived WebSocket tokens: a browser cannot set headers on a WebSocket, and an API key in a URL lands in
gateway access logs, so a token minted over an authenticated POST names the tenant and expires in seconds."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time


def new_secret() -> bytes:
    """A per-process secret, for when SAM2_WS_TOKEN_SECRET is unset (then tokens work on this replica only)."""
    return secrets.token_bytes(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _sign(secret: bytes, body: bytes) -> str:
    return _b64(hmac.new(secret, body, hashlib.sha256).digest())


def mint(secret: bytes, tenant: str, ttl: float, now: float | None = None) -> str:
    """A token for `tenant` valid for `ttl` seconds: base64url("tenant:expiry") "." HMAC-SHA256 signature."""
    body = f"{tenant}:{int((time.time() if now is None else now) + ttl)}".encode("utf-8")
    return f"{_b64(body)}.{_sign(secret, body)}"


def verify(secret: bytes, token: str, now: float | None = None) -> str | None:
    """The token's tenant, or None when it is malformed, forged or expired."""
    try:
        body_b64, sig = token.split(".")
        body = base64.urlsafe_b64decode(body_b64 + "=" * (-len(body_b64) % 4))
        if not hmac.compare_digest(sig, _sign(secret, body)):
            return None
        tenant, expiry = body.decode("utf-8").rsplit(":", 1)
        if int(expiry) < (time.time() if now is None else now):
            return None
    except (ValueError, UnicodeDecodeError):
        return None
    return tenant
