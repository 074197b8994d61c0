"""Scores the sensitivity scanner on the labelled corpus: recall on the positives, false
positive rate on the negatives. Shared by ``tests/policies/test_corpus.py`` (asserts the
targets) and ``bench/scanner.py`` (prints them).

A positive is **found** when the request's level is at least its family's level *and* a
finding of its family covers (overlaps) the planted value, at the location of the text
that carries it. Families are the built-in detectors, except ``credential``: any
credential-class detector (every built-in detector that is not personal, financial or
network data: ``api_key``, ``private_key``, ``jwt`` and any credential detector added
later), so the split of credentials between detectors does not matter. ``private_key``
and ``jwt`` positives also count when a credential-class detector other than their own
claims them (each is a secret; the request is ``restricted`` either way).

A negative is a **false positive** when its scan has any finding or a level above the
default (``public``): nothing in it may be flagged.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policies.models import BUILTIN_DETECTORS, level_rank
from policies.sensitivity import Scan, Scanner, iter_texts

HERE = Path(__file__).resolve().parent
POSITIVES = HERE / "positives.jsonl"
NEGATIVES = HERE / "negatives.jsonl"

#: Targets of issue 10.
TARGET_RECALL = 0.99
TARGET_FP_RATE = 0.03

#: Built-in detectors of data that is not a credential.
NOT_CREDENTIALS = frozenset({"credit_card", "iban", "us_ssn", "email", "phone", "ip_address"})
CREDENTIAL_FAMILIES = frozenset({"credential", "private_key", "jwt"})


def load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def accepted(family: str) -> frozenset[str]:
    """The detectors whose finding counts for ``family``."""
    if family in CREDENTIAL_FAMILIES:
        return frozenset(BUILTIN_DETECTORS) - NOT_CREDENTIALS
    return frozenset({family})


def family_level(family: str) -> str:
    """The level a request holding a value of ``family`` must reach (the default level
    of its detector; ``restricted`` for credentials)."""
    return max((BUILTIN_DETECTORS[name] for name in accepted(family)), key=level_rank)


def _encodings(value: str) -> Iterator[str]:
    """``value`` as it may appear in a text: as is, and inside one or two JSON strings
    (tool-call arguments are a JSON document in a string)."""
    yield value
    once = json.dumps(value, ensure_ascii=False)[1:-1]
    yield once
    yield json.dumps(once, ensure_ascii=False)[1:-1]


def places(case: dict[str, Any]) -> list[tuple[str, int, int]]:
    """Every ``(location, start, end)`` where a positive's value is in its request."""
    out: list[tuple[str, int, int]] = []
    for location, text in iter_texts(case["endpoint"], case["body"]):
        for needle in dict.fromkeys(_encodings(case["value"])):
            start = text.find(needle)
            while start >= 0:
                out.append((location, start, start + len(needle)))
                start = text.find(needle, start + 1)
    return out


@dataclass(frozen=True)
class Result:
    """One case's outcome: ``flagged`` is found (positive) or false positive (negative)."""

    case: dict[str, Any]
    scan: Scan
    flagged: bool

    @property
    def group(self) -> str:
        return str(self.case.get("family") or self.case["category"])

    def describe(self) -> str:
        found = ", ".join(sorted(self.scan.detectors)) or "nothing"
        fmt = f" [{self.case['format']}]" if "format" in self.case else ""
        return (f"{self.case['id']} at {self.case['position']}{fmt}: {self.case['note']} "
                f"-> level {self.scan.level}, found {found}")


def judge(scanner: Scanner, case: dict[str, Any]) -> Result:
    scan = scanner.scan(case["endpoint"], case["body"])
    if case["kind"] == "negative":
        return Result(case, scan, bool(scan.findings) or scan.level != "public")
    family = case["family"]
    names = accepted(family)
    wanted = places(case)
    covered = any(f.detector in names and f.location == location and f.start < end and start < f.end
                  for f in scan.findings for location, start, end in wanted)
    return Result(case, scan, covered and level_rank(scan.level) >= level_rank(family_level(family)))


@dataclass(frozen=True)
class Score:
    positives: list[Result]
    negatives: list[Result]

    @property
    def recall(self) -> float:
        return sum(r.flagged for r in self.positives) / len(self.positives)

    @property
    def fp_rate(self) -> float:
        return sum(r.flagged for r in self.negatives) / len(self.negatives)

    @property
    def misses(self) -> list[Result]:
        return [r for r in self.positives if not r.flagged]

    @property
    def false_positives(self) -> list[Result]:
        return [r for r in self.negatives if r.flagged]

    def passed(self) -> bool:
        return self.recall >= TARGET_RECALL and self.fp_rate <= TARGET_FP_RATE


def score(scanner: Scanner, positives: Iterable[dict[str, Any]] | None = None,
          negatives: Iterable[dict[str, Any]] | None = None) -> Score:
    pos = load(POSITIVES) if positives is None else positives
    neg = load(NEGATIVES) if negatives is None else negatives
    return Score([judge(scanner, c) for c in pos], [judge(scanner, c) for c in neg])


def breakdown(results: list[Result], key: str) -> list[tuple[str, int, int]]:
    """``(value of key, cases, flagged)`` per value of ``key`` (``family``, ``position``,
    ``category``), in order of the value."""
    total: Counter[str] = Counter()
    flagged: Counter[str] = Counter()
    for r in results:
        name = str(r.case.get(key, "?"))
        total[name] += 1
        flagged[name] += r.flagged
    return [(name, total[name], flagged[name]) for name in sorted(total)]


def report(result: Score, misses: bool = True) -> list[str]:
    """A printable summary: overall, per family and position, and the misses."""
    lines = [
        f"recall {result.recall:.1%} ({sum(r.flagged for r in result.positives)}/{len(result.positives)}) "
        f"target >= {TARGET_RECALL:.0%} -> {'PASS' if result.recall >= TARGET_RECALL else 'FAIL'}",
        f"false positives {result.fp_rate:.1%} ({len(result.false_positives)}/{len(result.negatives)}) "
        f"target <= {TARGET_FP_RATE:.0%} -> {'PASS' if result.fp_rate <= TARGET_FP_RATE else 'FAIL'}",
    ]
    for title, results, key in (("recall by family", result.positives, "family"),
                                ("recall by position", result.positives, "position"),
                                ("false positives by category", result.negatives, "category"),
                                ("false positives by position", result.negatives, "position")):
        cells = [f"{name} {hit}/{n}" for name, n, hit in breakdown(results, key)]
        lines.append(f"{title}: " + ", ".join(cells))
    if misses:
        for title, results in (("missed", result.misses), ("false positive", result.false_positives)):
            for group in sorted({r.group for r in results}):
                lines.append(f"{title} ({group}):")
                lines.extend(f"  {r.describe()}" for r in results if r.group == group)
    return lines
