"""The linear-time regex engine for policies' custom detectors (RE2, ``google-re2``).

A custom detector's ``regex`` runs on every text of every request, and the text is the
client's: on Python's backtracking engine one careless pattern (``\\d+x``, ``(a+)+$``)
lets a single body take seconds to hours. RE2 matches in time linear in the text for
every pattern it accepts, so policies may write what they mean. Measured against the
stdlib engine (``bench/scanner.py``, bench/README.md): typical custom patterns 10-20x
faster on prose; ``(a+)+$`` on 26 characters 7 s → microseconds; ``\\d+x`` on 10 KB of
digits 0.3 s → 2 µs.

One search is linear, but finding *every* match is not by itself: after each match the
engine may read far ahead to decide between alternatives (``\\d(?:\\d*x)?`` on a run of
digits reads to the run's end after every digit: quadratic). So ``LinearPattern.spans``
searches windows of ``2 * MAX_MATCH`` characters that overlap by ``MAX_MATCH``: each search
reads at most one window, whatever the pattern. The cost is a limit: a match is at most
``MAX_MATCH`` characters; a longer one is reported as a finding cut at the window's end
(detection errs towards sensitive), as is a match that a word boundary or ``$`` would
not have allowed past the window.

The price is RE2's syntax: no backreferences (``\\1``) and no lookarounds (``(?=``,
``(?<!``); ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII-only (``\\p{N}``, ``\\pL`` match
any script); ``\\Z`` is spelt ``\\z``. A pattern RE2 cannot compile is rejected at load
with RE2's reason (``compile_linear`` raises ``RegexError``), as is one that matches the
empty string (``x*``: a match at every position, no finding).

Owns the ``re2`` import (the only module that may import it).
"""

from __future__ import annotations

from typing import Any

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

__all__ = ["MAX_MATCH", "LinearPattern", "RegexError", "compile_linear"]

#: The compiled program's memory cap (RE2's default, 8 MiB): a pattern whose automaton
#: would be larger (``\\w{1000}{1000}``) is refused at load.
_MAX_MEM = 8 << 20


class RegexError(ValueError):
    """A pattern the linear-time engine cannot run, with RE2's reason."""


#: The longest match a custom detector is sure to report in full, in bytes of UTF-8.
MAX_MATCH = 256
#: The window searched when the last search found nothing: large, so that prose costs one
#: search call per window; after a match, windows of ``2 * MAX_MATCH`` bound what the
#: engine reads ahead per match (and a large window follows a small one that found
#: nothing, so the read-ahead wasted is at most ``_WINDOW / MAX_MATCH`` times the text).
_WINDOW = 8192
_UNANCHORED = re2._Anchor.UNANCHORED


class LinearPattern:
    """A compiled custom regex: ``spans`` gives every non-empty match's (start, end) in
    characters, in time linear in the text."""

    __slots__ = ("_match",)

    def __init__(self, regexp: Any) -> None:
        #: The compiled program's own search, ``(anchor, bytes, pos, endpos) → spans``
        #: (``[(-1, -1)]``: none), without the wrapper's per-call generator and match
        #: object: a third of the cost per match (google-re2 is pinned; tests cover it).
        self._match = regexp._regexp.Match

    def spans(self, text: str) -> list[tuple[int, int]]:
        data = text.encode("utf-8", "surrogatepass")
        offsets = _Offsets(data, ascii_only=len(data) == len(text))
        found: list[tuple[int, int]] = []
        pos, size, window = 0, len(data), _WINDOW
        while pos < size:
            end = min(size, pos + window)
            s, e = self._match(_UNANCHORED, data, pos, end)[0]
            if s < 0:
                if end == size:
                    break
                pos, window = _boundary(data, end - MAX_MATCH), _WINDOW
                continue
            if e == end < size and window == _WINDOW:  # maybe cut by the window: read it again
                s, e = self._match(_UNANCHORED, data, s, min(size, s + 2 * MAX_MATCH))[0]
            if e > s:
                found.append(offsets.span(s, e))
            pos, window = (e if e > s else _boundary(data, s + 1)), 2 * MAX_MATCH
        return found


class _Offsets:
    """Byte offsets of UTF-8 ``data`` to character offsets, for increasing offsets: linear."""

    __slots__ = ("_at", "_chars", "_data", "_same")

    def __init__(self, data: bytes, ascii_only: bool) -> None:
        self._data, self._same = data, ascii_only
        self._at = self._chars = 0

    def span(self, s: int, e: int) -> tuple[int, int]:
        return (s, e) if self._same else (self._char(s), self._char(e))

    def _char(self, i: int) -> int:
        self._chars += len(self._data[self._at : i].decode("utf-8", "surrogatepass"))
        self._at = i
        return self._chars


def _boundary(data: bytes, i: int) -> int:
    """The first character boundary at or after byte ``i`` (UTF-8 continuation bytes are
    0b10xxxxxx)."""
    while i < len(data) and data[i] & 0xC0 == 0x80:
        i += 1
    return i


def compile_linear(regex: str, case_sensitive: bool = False) -> LinearPattern:
    """Compile ``regex`` for RE2; ``RegexError`` says why it cannot be."""
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False
    options.max_mem = _MAX_MEM
    try:
        regexp = re2.compile(regex.encode("utf-8", "surrogatepass"), options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise RegexError(f"{reason} (custom regexes use RE2 syntax: no lookarounds or backreferences; "
                         "see docs/policy.md)") from None
    if regexp._regexp.Match(re2._Anchor.ANCHOR_BOTH, b"", 0, 0)[0][0] == 0:
        raise RegexError("matches the empty string, so it would match at every position and find "
                         "nothing; require at least one character (e.g. x+ rather than x*)")
    return LinearPattern(regexp)
