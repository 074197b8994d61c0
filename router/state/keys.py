"""Virtual keys: who is calling (``Principal``: team + key id), from the policy's ``teams``
keys and from keys created through the admin API / CLI (kept, hashed, in the store).

Keys are never stored or logged in plain text: only their sha256. Comparison is
constant-time (``hmac.compare_digest``). A key revoked in the store is refused on every
replica as soon as the change announcement reaches it (``RedisStore`` caches key records
only while subscribed to those announcements); expiry is checked on every request.

A key the store does not know is remembered as unknown for ``UNKNOWN_TTL_S`` (at most
``UNKNOWN_MAX`` of them, least recently seen dropped first), so a client retrying a bad
key, or someone trying the same random keys, costs the store one lookup per key per TTL.
A key created in this process is forgotten from that list at once (``KeyRing.forget``);
one created elsewhere and tried here before it existed is refused for at most the TTL.
Revoking by id needs at least ``MIN_ID_PREFIX`` hex digits of it (ids are 12).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from policies import Policy
from router.state.store import KeyRecord, KeyStore, StoreUnavailable

__all__ = ["MIN_ID_PREFIX", "UNKNOWN_MAX", "UNKNOWN_TTL_S", "AuthError", "KeyIdTooShort", "KeyRing", "Principal",
           "bearer_token", "create_key", "find_key", "hash_key", "new_key"]

log = logging.getLogger("switchyard.keys")
_PREFIX = "sk-sy-"
UNKNOWN_TTL_S = 5.0  # how long a key the store does not know is refused without asking it again
UNKNOWN_MAX = 10_000  # unknown keys remembered per process (about 1 MB)
MIN_ID_PREFIX = 8  # hex digits of a key id that revoking by prefix needs


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


class KeyIdTooShort(ValueError):
    """A key id prefix too short to name one key safely."""


class KeyRing:
    def __init__(self, policy: Policy, store: KeyStore, *, unknown_ttl_s: float = UNKNOWN_TTL_S,
                 unknown_max: int = UNKNOWN_MAX, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy_keys: dict[str, str] = {h: team for team, spec in policy.teams.items()
                                             for h in spec.key_hashes()}
        self._store = store
        self._unknown: OrderedDict[str, float] = OrderedDict()  # sha256 → refused without a lookup until
        self._unknown_ttl_s = unknown_ttl_s
        self._unknown_max = unknown_max
        self._clock = clock

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
        if self._known_unknown(digest):
            raise AuthError("invalid API key")
        try:
            record = await self._store.get_key(digest)
        except StoreUnavailable as exc:
            raise AuthError(f"cannot check this key now (key store unavailable: {exc})",
                            code="key_store_unavailable") from None
        if record is None or not hmac.compare_digest(record.key_hash, digest):
            self._remember_unknown(digest)
            raise AuthError("invalid API key")
        if record.revoked:
            raise AuthError("this API key has been revoked", code="key_revoked")
        if record.expires_at is not None and record.expires_at <= time.time():
            raise AuthError("this API key has expired", code="key_expired")
        return Principal(record.team, digest[:12], record.budget_monthly_usd)

    def forget(self, key_hash: str) -> None:
        """``key_hash`` was just created: stop refusing it if it was remembered as unknown."""
        self._unknown.pop(key_hash, None)

    def _known_unknown(self, digest: str) -> bool:
        until = self._unknown.get(digest)
        if until is None:
            return False
        if until <= self._clock():
            del self._unknown[digest]
            return False
        self._unknown.move_to_end(digest)
        return True

    def _remember_unknown(self, digest: str) -> None:
        self._unknown[digest] = self._clock() + self._unknown_ttl_s
        self._unknown.move_to_end(digest)
        while len(self._unknown) > self._unknown_max:
            self._unknown.popitem(last=False)


async def create_key(store: KeyStore, team: str, name: str = "", expires_at: float | None = None,
                     budget_monthly_usd: float | None = None) -> tuple[str, KeyRecord]:
    """A new key for ``team``: returns the plain key (shown once) and what was stored."""
    key = new_key()
    record = KeyRecord(hash_key(key), team, name, time.time(), expires_at, budget_monthly_usd=budget_monthly_usd)
    await store.put_key(record)
    log.info("created key %s for team %s", record.key_hash[:12], team)
    return key, record


async def find_key(store: KeyStore, ident: str) -> KeyRecord | None:
    """The one stored key matching ``ident``: the key itself, or its id (a prefix of its
    sha256, at least ``MIN_ID_PREFIX`` long: ``KeyIdTooShort`` otherwise)."""
    digest = hash_key(ident)
    records = await store.list_keys()
    exact = [r for r in records if r.key_hash == digest]
    if exact:
        return exact[0]
    if len(ident) < MIN_ID_PREFIX:
        raise KeyIdTooShort(f"a key id needs at least {MIN_ID_PREFIX} of its 12 characters to name one key "
                            f"(got {len(ident)})")
    matches = [r for r in records if r.key_hash.startswith(ident.lower())]
    return matches[0] if len(matches) == 1 else None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """``Authorization: Bearer <token>`` (the OpenAI SDKs), else ``x-api-key``."""
    value = headers.get("Authorization")
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return headers.get("x-api-key") or None
