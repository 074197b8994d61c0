"""Supply chain (issue 11, item 11): every package in ``requirements.lock`` is pinned to one
exact version with at least one ``--hash``, and none is on the deny-list kept in the repo
(``requirements.deny``). Runs offline, in CI; ``make audit`` (pip-audit, needs a vulnerability
database) is the online complement, outside CI."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
DENY = ROOT / "requirements.deny"

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s;\\]+)")


@dataclass(frozen=True)
class Requirement:
    line: int
    text: str  # the requirement without its options
    name: str | None  # normalised; None when not an exact `name==version` pin
    version: str | None
    hashes: tuple[str, ...]


def normalise(name: str) -> str:
    """PyPI's name normalisation (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> list[Requirement]:
    """The requirements of a pip requirements file, continuation lines joined."""
    requirements: list[Requirement] = []
    logical, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not logical:
            start = number
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        if logical.strip():
            requirements.append(_requirement(start, logical.strip()))
        logical = ""
    if logical.strip():
        requirements.append(_requirement(start, logical.strip()))
    return requirements


def _requirement(line: int, logical: str) -> Requirement:
    words = logical.split()
    hashes = tuple(w.split("=", 1)[1] for w in words if w.startswith("--hash="))
    text = " ".join(w for w in words if not w.startswith("--hash="))
    match = _PIN.match(text)
    if match is None:
        return Requirement(line, text, None, None, hashes)
    return Requirement(line, text, normalise(match["name"]), match["version"], hashes)


def parse_deny(text: str) -> dict[tuple[str, str], str]:
    """``{(name, version): reason}``."""
    denied: dict[tuple[str, str], str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        spec, _, reason = raw.partition("#")
        if not spec.strip():
            continue
        match = _PIN.match(spec.strip())
        if match is None or match.end() != len(spec.strip()):
            raise ValueError(f"requirements.deny:{number}: expected `name==version  # reason`, got {raw!r}")
        denied[(normalise(match["name"]), match["version"])] = reason.strip() or "denied"
    return denied


def problems(lock_text: str, denied: dict[tuple[str, str], str]) -> list[str]:
    """Everything wrong with a lock: unpinned or unhashed requirements, denied versions."""
    found: list[str] = []
    for req in parse_lock(lock_text):
        if req.name is None or req.version is None:
            found.append(f"line {req.line}: {req.text!r} is not pinned to one exact version (name==version)")
            continue
        if not req.hashes or not all(h.startswith("sha256:") and len(h) == 71 for h in req.hashes):
            found.append(f"line {req.line}: {req.name}=={req.version} has no sha256 --hash")
        reason = denied.get((req.name, req.version))
        if reason is not None:
            found.append(f"line {req.line}: {req.name}=={req.version} is on the deny-list: {reason}")
    return found


# -- the repository's own lock ------------------------------------------------------------

def test_the_lock_is_pinned_hashed_and_clean() -> None:
    lock = LOCK.read_text()
    assert len(parse_lock(lock)) > 50
    assert problems(lock, parse_deny(DENY.read_text())) == []


def test_the_deny_list_holds_the_compromised_litellm_releases() -> None:
    denied = parse_deny(DENY.read_text())
    assert ("litellm", "1.82.7") in denied and ("litellm", "1.82.8") in denied


# -- the check itself fails on a crafted lock ----------------------------------------------

H1 = "sha256:" + "a" * 64
H2 = "sha256:" + "b" * 64
DENIED = parse_deny("litellm==1.82.7  # compromised\nLiteLLM==1.82.8\n")


def test_a_clean_crafted_lock_passes() -> None:
    lock = (f"# generated\naiohttp==3.14.5 \\\n    --hash={H1} \\\n    --hash={H2}\n    # via x\n"
            f"litellm==1.82.6 \\\n    --hash={H1}\n")
    assert problems(lock, DENIED) == []


@pytest.mark.parametrize(("lock", "expected"), [
    (f"litellm==1.82.7 \\\n    --hash={H1}\n", "litellm==1.82.7 is on the deny-list: compromised"),
    (f"LiteLLM==1.82.8 \\\n    --hash={H1}\n", "litellm==1.82.8 is on the deny-list"),
    (f"lite_llm==1.0 \\\n    --hash={H1}\nlitellm[proxy]==1.82.7 --hash={H2}\n", "litellm==1.82.7 is on the deny-list"),
    ("aiohttp==3.14.5\n", "aiohttp==3.14.5 has no sha256 --hash"),
    ("aiohttp==3.14.5 \\\n    # via x\n", "aiohttp==3.14.5 has no sha256 --hash"),
    ("aiohttp==3.14.5 --hash=md5:abc\n", "has no sha256 --hash"),
    (f"aiohttp>=3 --hash={H1}\n", "is not pinned to one exact version"),
    (f"-e . --hash={H1}\n", "is not pinned"),
    (f"git+https://example.com/x.git#egg=x --hash={H1}\n", "is not pinned"),
])
def test_the_check_fails_on_a_crafted_lock(lock: str, expected: str) -> None:
    found = problems(lock, DENIED)
    assert any(expected in p for p in found), found


def test_a_malformed_deny_list_is_an_error() -> None:
    with pytest.raises(ValueError, match="requirements.deny:2"):
        parse_deny("litellm==1.82.7\nlitellm>=1.82.7\n")
