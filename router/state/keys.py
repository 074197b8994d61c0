"""Virtual keys: who is calling (``Principal``: team + key id), from the policy's ``teams``
keys and from keys created through the admin API / CLI (kept, hashed, in the store).

Keys are never stored or logged in plain text: only their sha256. Comparison is
constant-time (``hmac.compare_digest``). A key revoked in the store is refused on every
replica as soon as the change announcement reaches it (``RedisStore`` caches key records
only while subscribed to those announcements); expiry is checked on every request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from policies import Policy
from router.state.store import KeyRecord, KeyStore, StoreUnavailable

__all__ = ["AuthError", "KeyRing", "Principal", "bearer_token", "create_key", "find_key", "hash_key", "new_key"]

log = logging.getLogger("switchyard.keys")
_PREFIX = "sk-sy-"


@dataclass(frozen=True, slots=True)
class Principal:
    team: str
    key_id: str  # first 12 hex digits of the key's sha256: safe to log and show
    budget_monthly_usd: float | None = None  # the key's own budget (store keys)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return _PREFIX + secrets.token_urlsafe(32)


class AuthError(Exception):
    """The caller is not allowed in (missing, unknown, revoked or expired key)."""

    def __init__(self, message: str, code: str = "invalid_api_key") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class KeyRing:
    def __init__(self, policy: Policy, store: KeyStore) -> None:
        self._policy_keys: dict[str, str] = {h: team for team, spec in policy.teams.items()
                                             for h in spec.key_hashes()}
        self._store = store

    @property
    def has_policy_keys(self) -> bool:
        return bool(self._policy_keys)

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        key = bearer_token(headers)
        if not key:
            raise AuthError("missing API key: send Authorization: Bearer <virtual key>")
        digest = hash_key(key)
        for known, team in self._policy_keys.items():
            if hmac.compare_digest(known, digest):
                return Principal(team, digest[:12])
        try:
            record = await self._store.get_key(digest)
        except StoreUnavailable as exc:
            raise AuthError(f"cannot check this key now (key store unavailable: {exc})",
                            code="key_store_unavailable") from None
        if record is None or not hmac.compare_digest(record.key_hash, digest):
            raise AuthError("invalid API key")
        if record.revoked:
            raise AuthError("this API key has been revoked", code="key_revoked")
        if record.expires_at is not None and record.expires_at <= time.time():
            raise AuthError("this API key has expired", code="key_expired")
        return Principal(record.team, digest[:12], record.budget_monthly_usd)



async def create_key(store: KeyStore, team: str, name: str = "", expires_at: float | None = None,
                     budget_monthly_usd: float | None = None) -> tuple[str, KeyRecord]:
    """A new key for ``team``: returns the plain key (shown once) and what was stored."""
    key = new_key()
    record = KeyRecord(hash_key(key), team, name, time.time(), expires_at, budget_monthly_usd=budget_monthly_usd)
    await store.put_key(record)
    log.info("created key %s for team %s", record.key_hash[:12], team)
    return key, record


async def find_key(store: KeyStore, ident: str) -> KeyRecord | None:
    """The one stored key matching ``ident``: its id (a prefix of its sha256) or the key itself."""
    digest = hash_key(ident)
    matches = [r for r in await store.list_keys() if r.key_hash == digest or r.key_hash.startswith(ident)]
    return matches[0] if len(matches) == 1 else None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """``Authorization: Bearer <token>`` (the OpenAI SDKs), else ``x-api-key``."""
    value = headers.get("Authorization")
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return headers.get("x-api-key") or None
