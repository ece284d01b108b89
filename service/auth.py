"""API keys: the settings hold sha256 digests only; a request shows the key as Bearer token or X-API-Key."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from . import errors

bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")

NO_AUTH_TENANT = "anonymous"  # the tenant of every caller while auth is off (no SAM2_API_KEYS)


def hash_key(key: str) -> str:
    """What SAM2_API_KEYS holds for a key: its sha256, hex (`printf %s "$KEY" | sha256sum`)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def match_key(presented: str, hashes: list[str]) -> str | None:
    """The stored digest the key matches, or None. Compares against every digest in constant time."""
    digest = hash_key(presented).encode("ascii")
    found = None
    for stored in hashes:
        if hmac.compare_digest(digest, stored.encode("ascii")):
            found = stored
    return found


def presented_key(headers, query_params=None) -> str | None:
    """The API key a request shows: `Authorization: Bearer`, `X-API-Key`, or (WebSockets from browsers, which
    cannot set headers) the `api_key` query parameter."""
    auth = headers.get("authorization", "")
    key = auth[7:] if auth.lower().startswith("bearer ") else headers.get("x-api-key")
    if not key and query_params is not None:
        key = query_params.get("api_key")
    return key or None


def tenant_of(presented: str | None, hashes: list[str]) -> str | None:
    """The tenant (digest of the key) of a caller showing `presented`; NO_AUTH_TENANT with auth off; None if refused."""
    if not hashes:
        return NO_AUTH_TENANT
    return match_key(presented, hashes) if presented else None


async def require_api_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    api_key: Annotated[str | None, Security(header_scheme)],
) -> str:
    """The caller's tenant (the digest of its key; NO_AUTH_TENANT with auth off). Embeddings and tracking
    sessions belong to a tenant."""
    hashes: list[str] = request.app.state.settings.api_keys
    presented = bearer.credentials if bearer is not None else api_key
    if hashes and not presented:
        raise errors.unauthorized("this server needs an API key: send `Authorization: Bearer <key>` or `X-API-Key`")
    tenant = tenant_of(presented, hashes)
    if tenant is None:
        where = "Authorization: Bearer (checked first; X-API-Key is then ignored)" if bearer else "X-API-Key"
        raise errors.unauthorized(f"the API key in {where} is not valid")
    return tenant


Tenant = Annotated[str, Depends(require_api_key)]
