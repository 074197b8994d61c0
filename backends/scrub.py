"""Credentials and internal addresses out of every text that leaves a backend.

An upstream's error message is the provider's own text: it may echo the key the gateway
sent (``Incorrect API key provided: sk-…``), and a transport error names the host and port
that was tried. ``Scrubber`` removes both; ``ScrubbedBackend`` applies it once, where errors
leave this package (``backends.registry.build_backend`` wraps every adapter in one):

- ``credentials(text)`` → every configured secret (the API key, credential-bearing header
  values), ``Bearer``/``Basic`` tokens, key-shaped strings (``sk-…``, ``AKIA…``, ``AIza…``,
  ``ghp_…``, ``xox?-…``, JWTs, PEM private keys) and ``api_key=``/``?key=``-style values
  become ``[redacted]``. What a log may keep: ``BackendError.detail``.
- ``public(text)`` → that, and addresses: the backend's own base URL, origin and
  ``host:port`` become its name; any other URL, IP literal or ``host.domain:port``
  becomes ``[address]``. What a client may see: ``BackendError.message``.

A scrubbed error drops its exception chain (``raise … from None``): the third-party
exception under it carries the unscrubbed text. Must not import ``router`` or ``policies``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from backends.base import Backend, BackendConfig
from backends.errors import BackendError
from backends.metrics import LoadSample
from backends.types import BackendRequest, BackendResponse, BackendStream, Health, stream_ready

__all__ = ["REDACTED", "Scrubber", "ScrubbedBackend", "ScrubbedStream"]

REDACTED = "[redacted]"
ADDRESS = "[address]"
#: Shorter configured values are not treated as secrets (replacing them would garble text).
_MIN_SECRET = 6
#: Header names whose values are credentials (``api-key`` for Azure, ``x-goog-api-key``…).
_SECRET_HEADER = re.compile(r"(?i)auth|key|token|secret|cookie|signature|password")


@dataclass(frozen=True, slots=True)
class _Rule:
    """``pattern`` → ``replacement``, tried only when one of ``triggers`` is in the
    lower-cased text: most log lines hold none, and cost a few substring tests."""

    triggers: tuple[str, ...]
    pattern: re.Pattern[str]
    replacement: str


def _rule(triggers: str, pattern: str, replacement: str, flags: int = 0) -> _Rule:
    return _Rule(tuple(triggers.split()), re.compile(pattern, flags), replacement)


class _Rules:
    """Rules applied in order, each only if the text holds one of its triggers."""

    __slots__ = ("_rules",)

    def __init__(self, *rules: _Rule) -> None:
        self._rules = rules

    def apply(self, text: str) -> str:
        lower = text.lower()
        for rule in self._rules:
            for trigger in rule.triggers:
                if trigger in lower:
                    text = rule.pattern.sub(rule.replacement, text)
                    break
        return text


#: Credentials, whatever backend they belong to.
_CREDENTIALS = _Rules(
    _rule("private", r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", REDACTED,
          re.S),
    _rule("bearer", r"(?i)\b(bearer[ \t]+)(?=[A-Za-z0-9._~+/=:-]*\d)[A-Za-z0-9._~+/=:-]{6,}", rf"\1{REDACTED}"),
    _rule("basic", r"\b(Basic[ \t]+)(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{8,}={0,2}", rf"\1{REDACTED}"),
    _rule("k-", r"(?<![A-Za-z0-9])(?:sk|pk|rk)-[A-Za-z0-9_-]{6,}", REDACTED),
    _rule("_live_ _test_", r"(?<![A-Za-z0-9])(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,}", REDACTED),
    _rule("akia asia", r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])", REDACTED),
    _rule("aiza", r"(?<![A-Za-z0-9])AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", REDACTED),
    _rule("gh github_pat_", r"(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})", REDACTED),
    _rule("xox", r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}", REDACTED),
    _rule("eyj", r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*", REDACTED),
    _rule("key token secret passw",
          r"(?i)((?:api[_-]?key|x-api-key|access[_-]?token|auth[_-]?token|client[_-]?secret|secret[_-]?key"
          r"|password|passwd)[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;}]{4,}", rf"\1{REDACTED}"),
    _rule("key= token= sig", r"(?i)([?&](?:key|api_key|token|access_token|sig|signature|x-amz-signature)=)[^&\s\"']+",
          rf"\1{REDACTED}"),
    _rule("@", r"(?i)(://[^/\s:@]*:)[^@\s/]+@", rf"\1{REDACTED}@"),  # user:password@host
)
#: Addresses of anything: after the backend's own addresses have become its name.
_ADDRESSES = _Rules(
    _rule("://", r"(?i)\b[a-z][a-z0-9+.-]*://[^\s\"'<>)\]]+", ADDRESS),
    _rule("('", r"\(\s*'[^'\s]*'\s*,\s*\d{1,5}(?:\s*,\s*\d+)*\s*\)", ADDRESS),  # a socket address: ('host', port)
    _rule("[", r"\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\](?::\d{1,5})?", ADDRESS),
    _rule(".", r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?![\w.])", ADDRESS),
    _rule("localhost", r"(?i)(?<![\w.-])localhost(?::\d{1,5})?(?![\w-])", ADDRESS),
    _rule(":", r"(?i)(?<![\w.-])(?:[a-z0-9-]+\.)+[a-z][a-z0-9-]*:\d{1,5}(?!\d)", ADDRESS),
    _rule("host", r"(?i)\b(host[ \t]+)(?=[\w.:\[\]-]*[.:])[\w.:\[\]-]+", rf"\1{ADDRESS}"),
)


class Scrubber:
    """Removes ``secrets`` and credential-shaped strings (``credentials``), and addresses too
    (``public``): each of ``names``' keys (a URL, origin, ``host:port`` or host) becomes its
    value (the backend's name), any other address ``[address]``."""

    __slots__ = ("_secrets", "_names")

    def __init__(self, secrets: Iterable[str] = (), names: dict[str, str] | None = None) -> None:
        found = {s for s in secrets if len(s) >= _MIN_SECRET}
        self._secrets = tuple(sorted(found, key=len, reverse=True))  # longest first: no partial leftovers
        self._names = sorted((names or {}).items(), key=lambda kv: len(kv[0]), reverse=True)

    @classmethod
    def for_backends(cls, configs: Iterable[BackendConfig], extra: Iterable[str] = ()) -> Scrubber:
        """One scrubber for several backends: every key and header secret, every address
        (and the ``extra`` secrets: the gateway's own admin key, say)."""
        secrets: list[str] = list(extra)
        names: dict[str, str] = {}
        shared: set[str] = set()  # an address of two backends names neither: it becomes [address]
        for config in configs:
            secrets.extend(_secrets_of(config))
            for address, name in _addresses_of(config).items():
                if names.setdefault(address, name) != name:
                    shared.add(address)
        return cls(secrets, {a: n for a, n in names.items() if a not in shared})

    def credentials(self, text: str) -> str:
        """``text`` with every credential replaced by ``[redacted]`` (addresses kept): for logs."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _CREDENTIALS.apply(text)

    def public(self, text: str) -> str:
        """``text`` without credentials or internal addresses: for clients."""
        text = self.credentials(text)
        for address, name in self._names:
            if address in text:
                text = text.replace(address, name)
        return _ADDRESSES.apply(text)

    def error(self, exc: BackendError) -> BackendError:
        """Scrub ``exc`` in place: ``message`` for clients, ``detail`` for logs."""
        raw = exc.detail
        exc.detail = self.credentials(raw)
        exc.message = self.public(raw)
        exc.args = (exc.message,)
        return exc


def _secrets_of(config: BackendConfig) -> list[str]:
    secrets = [config.api_key] if config.api_key else []
    for name, value in config.headers:
        if _SECRET_HEADER.search(name):
            secrets.append(value)
            scheme, _, token = value.partition(" ")
            if token and scheme.lower() in ("bearer", "basic", "token"):
                secrets.append(token.strip())
    return secrets


def _addresses_of(config: BackendConfig) -> dict[str, str]:
    """The backend's base URL, origin, ``host:port`` and (dotted names and IPs only) host."""
    if not config.base_url:
        return {}
    url = config.base_url.rstrip("/")
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    names = {url: config.name, f"{parts.scheme}://{parts.netloc}": config.name}
    if host:
        default = {"http": 80, "https": 443}.get(parts.scheme)
        names[f"{host}:{port or default}"] = config.name
        if "." in host or ":" in host:
            names[host] = config.name
    return {k: v for k, v in names.items() if k}


class ScrubbedBackend:
    """``inner`` with every ``BackendError`` it raises scrubbed (``Scrubber.error``), and its
    health detail free of credentials. Errors are the only thing it touches."""

    def __init__(self, inner: Backend, scrubber: Scrubber) -> None:
        self.inner = inner
        self.name = inner.name
        self.self_hosted = inner.self_hosted
        self.scrubber = scrubber

    async def complete(self, request: BackendRequest) -> BackendResponse:
        try:
            return await self.inner.complete(request)
        except BackendError as exc:
            raise self.scrubber.error(exc) from None

    async def open_stream(self, request: BackendRequest) -> BackendStream:
        try:
            stream = await self.inner.open_stream(request)
        except BackendError as exc:
            raise self.scrubber.error(exc) from None
        return ScrubbedStream(stream, self.scrubber)

    async def health(self) -> Health:
        health = await self.inner.health()
        return Health(health.ok, self.scrubber.credentials(health.detail))

    async def load(self) -> LoadSample | None:
        try:
            return await self.inner.load()
        except BackendError as exc:
            raise self.scrubber.error(exc) from None

    async def close(self) -> None:
        await self.inner.close()


class ScrubbedStream:
    """A ``BackendStream`` whose mid-stream errors are scrubbed."""

    __slots__ = ("_inner", "_events", "_scrubber", "ready")

    def __init__(self, inner: BackendStream, scrubber: Scrubber) -> None:
        self._inner = inner
        self._events = aiter(inner)
        self._scrubber = scrubber
        self.ready = stream_ready(inner)

    def __aiter__(self) -> ScrubbedStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._events)
        except BackendError as exc:
            raise self._scrubber.error(exc) from None

    async def aclose(self) -> None:
        await self._inner.aclose()
