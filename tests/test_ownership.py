"""One owner per outside library, and the import-linter contracts that enforce it actually bite.

``make lint`` proves the contracts in ``pyproject.toml`` are kept; this proves they would break.
It pins who owns what (``OWNERS``), then copies ``router``, ``policies`` and ``backends`` to a
temporary directory, adds probe modules that import what they must not — each library from each
of the three packages, ``aiohttp`` from ``policies``, ``router`` from ``policies`` — runs
``lint-imports`` there and checks that each contract reports exactly its probes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("router", "policies", "backends")

#: outside library -> the only modules that may import it (STYLE.md, habit 2)
OWNERS = {
    "litellm": ("backends.litellm_backend",),
    "redis": ("router.state.redis_store",),
    "hiredis": ("router.state.redis_lane", "router.state.redis_store"),
    "opentelemetry": ("router.telemetry",),
    "prometheus_client": ("router.telemetry",),
    "tenacity": ("router.retry",),
    "pydantic": ("policies.loader", "policies.models", "policies.schema"),
    "yaml": ("policies.loader",),
    "re2": ("policies.regex",),
}


def contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(config["tool"]["importlinter"]["contracts"])


def test_each_outside_library_has_exactly_its_owners() -> None:
    owners: dict[str, tuple[str, ...]] = {}
    for contract in contracts():
        if contract["type"] == "protected":
            for module in contract["protected_modules"]:  # type: ignore[attr-defined]
                owners[module] = tuple(sorted(contract["allowed_importers"]))  # type: ignore[call-overload]
    assert owners == OWNERS, (f"pyproject.toml protected contracts give owners {owners}, not {OWNERS}; "
                              "changing who owns a library is a design decision: update OWNERS with it")
    assert any(c["type"] == "forbidden" and c["source_modules"] == ["policies"] and "aiohttp" in c["forbidden_modules"]
               for c in contracts()), "no contract keeps aiohttp out of policies"


def test_every_contract_breaks_on_a_violation(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    expected: dict[str, set[str]] = {}
    for library in OWNERS:
        for package in PACKAGES:
            expected.setdefault(library, set()).add(_probe(tmp_path, package, library))
    expected["aiohttp"] = {_probe(tmp_path, "policies", "aiohttp")}
    expected["router"] = {_probe(tmp_path, "policies", "router")}

    out = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "1000"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    sections = _broken_sections(out.stdout, [str(c["name"]) for c in contracts()])
    for contract in contracts():
        watched = {"protected": contract.get("protected_modules"), "forbidden": contract.get("forbidden_modules"),
                   "layers": ["router"]}[str(contract["type"])]
        name = str(contract["name"])
        assert name in sections, f"contract {name!r} was kept despite the probes:\n{out.stdout}"
        for library in watched:  # type: ignore[union-attr]
            for link in expected[library]:
                assert re.search(r"-\s+" + re.escape(link) + r" \(l\.1\)", sections[name]), (
                    f"contract {name!r} did not report {link}:\n{sections[name]}")


def _probe(root: Path, package: str, library: str) -> str:
    """Add ``<package>/ownership_probe_<library>.py`` importing ``library`` on line 1."""
    module = f"ownership_probe_{library}"
    (root / package / f"{module}.py").write_text(f"import {library}  # probe\n", encoding="utf-8")
    return f"{package}.{module} -> {library}"


def _broken_sections(report: str, names: list[str]) -> dict[str, str]:
    """Contract name -> the text lint-imports prints under it in "Broken contracts"."""
    lines = report.split("Broken contracts", 1)[-1].splitlines()
    sections: dict[str, str] = {}
    current = None
    for i, line in enumerate(lines):
        if line.strip() in names and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
            current = line.strip()
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections
