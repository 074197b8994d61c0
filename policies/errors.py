"""Errors raised by policy code. Each names the file, line and dotted path at fault.

Tree::

    PolicyError                 a policy file cannot be used (one or more PolicyIssue)
    UnknownAlias                a request names a model alias the policy does not define

Must not import ``router`` or ``backends``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PolicyError", "PolicyIssue", "UnknownAlias"]


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One problem in a policy file, located as ``file:line dotted.path``."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyError(Exception):
    """The policy cannot be loaded; ``issues`` lists every problem found."""

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class UnknownAlias(LookupError):
    """The request's ``model`` is not an alias of the policy."""

    def __init__(self, name: str, available: tuple[str, ...]) -> None:
        self.name = name
        self.available = available
        super().__init__(f"model {name!r} does not exist; available models: {', '.join(available)}")
