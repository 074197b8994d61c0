"""URLs that clients put in chat content: the gateway never fetches one.

litellm downloads image URLs (and file/PDF URLs) from the gateway host for most providers,
following redirects: a client could make the gateway GET an internal address. So before a
request reaches litellm, every URL in its messages' content parts is checked here, per kind:

=====================  ==========================================================================
kind                   URLs in content
=====================  ==========================================================================
``openai``, ``azure``  ``image_url`` URLs are sent on as they are; the provider fetches them.
``anthropic``          ``https://`` image URLs are sent on as a ``url`` image source; the provider
                       fetches them. ``http://`` ones (litellm would download them) are refused.
any other closed kind  image URLs are refused (litellm would download them).
every closed kind      a URL in any other part (``file``, audio, documents …) is refused.
=====================  ==========================================================================

``data:`` URLs are never refused: there is nothing to fetch. A refusal is ``UnsupportedInput``
(400, ``param`` naming the part) raised before any upstream is called; the engine then tries
the route's next target, which may take the URL, and answers 400 only when none could.

Self-hosted kinds (direct passthrough) never come here: the gateway forwards their body
untouched and fetches nothing; whether such a server fetches URLs is its own setting.
``backends.litellm_backend`` also turns litellm's own image download off, as a second line.

Must not import ``router`` or ``policies``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType

from backends.errors import UnsupportedInput

__all__ = ["IMAGE_URL_PREFIXES", "check_content_urls"]

#: Per closed kind, the image URL prefixes its adapter sends on untouched (the provider
#: fetches them). A kind that is not listed takes none.
IMAGE_URL_PREFIXES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "openai": ("http://", "https://"),
    "azure": ("http://", "https://"),
    "anthropic": ("https://",),
})


def check_content_urls(kind: str, model: str, body: Mapping[str, object], *, backend: str) -> None:
    """Raise ``UnsupportedInput`` for the first URL in ``body``'s messages that ``kind`` would
    make the gateway fetch (see the module docstring)."""
    for path, part in _parts(body):
        kind_of_part = part.get("type")
        if kind_of_part == "text":
            continue
        if kind_of_part == "image_url":
            url = _image_url(part.get("image_url"))
            if url is not None and not url.startswith("data:") and not _passes(kind, model, url):
                raise _refusal(backend, kind, f"{path}.image_url", "image URLs")
            continue
        for key, value in _strings(part):
            if _is_url(value):
                raise _refusal(backend, kind, f"{path}.{key}", "URLs in content parts other than image_url")


def _passes(kind: str, model: str, url: str) -> bool:
    if kind == "anthropic" and model.lower().startswith("invoke/"):
        return False  # litellm downloads every image URL for Bedrock's invoke route
    return url.startswith(IMAGE_URL_PREFIXES.get(kind, ()))


def _refusal(backend: str, kind: str, param: str, what: str) -> UnsupportedInput:
    return UnsupportedInput(
        f"{backend} (kind {kind}) cannot take {what}: the gateway does not fetch URLs for "
        f"clients. Send the content inline as a data: URL (data:image/png;base64,...)",
        backend=backend, code="unsupported_url", param=param)


def _parts(body: Mapping[str, object]) -> Iterator[tuple[str, Mapping[str, object]]]:
    """``(param path, part)`` for every content part of every message."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if isinstance(part, Mapping):
                yield f"messages[{i}].content[{j}]", part


def _image_url(value: object) -> str | None:
    """The URL of an ``image_url`` part (a string, or an object with ``url``)."""
    if isinstance(value, Mapping):
        value = value.get("url")
    return value if isinstance(value, str) else None


def _strings(part: Mapping[str, object]) -> Iterator[tuple[str, str]]:
    """``(dotted key, string)`` for every string inside ``part``, however deeply nested (an
    explicit stack: no recursion on client-controlled depth)."""
    stack: list[tuple[str, object]] = [(str(k), v) for k, v in part.items()]
    while stack:
        key, value = stack.pop()
        if isinstance(value, str):
            yield key, value
        elif isinstance(value, Mapping):
            stack.extend((f"{key}.{k}", v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{key}[{n}]", v) for n, v in enumerate(value))


def _is_url(value: str) -> bool:
    """Anything litellm might take for a URL (it lower-cases nothing, httpx does)."""
    head = value[:2048].strip().lower()
    return not head.startswith("data:") and ("://" in head or head.startswith("www."))
