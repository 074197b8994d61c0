"""YAML policy file → validated, resolved ``Policy``.

Owns: reading YAML while remembering the line of every node, ``${ENV}`` /
``${ENV:-default}`` expansion, pydantic validation, reference resolution, and
turning every failure into a ``PolicyIssue`` that names file, line and dotted path
(``policies/x.yaml:14 models.chat.targets[1]: unknown backend 'tgi-b'``). The caller hands
in the ``KindTable`` (what each backend kind is; owned by ``backends``, passed by ``router``).

Limits, checked before anything is built from the YAML (a policy is a few kilobytes; these
stop a broken or hostile file from taking the stack, the memory or minutes of CPU):
``MAX_POLICY_BYTES`` of text, ``MAX_DEPTH`` levels of nesting (checked while composing, so
10,000 nested brackets are an error, not a ``RecursionError``) and ``MAX_NODES`` nodes /
``MAX_EXPANDED_CHARS`` characters of scalars once YAML aliases are expanded (a "billion laughs"
file composes to a few nodes that stand for billions; their expanded size is counted on the
node graph, in time linear in the file, and the file is rejected before it is expanded).

Pure apart from reading the file it is given. Must not import ``router`` or ``backends``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from policies.errors import PolicyError, PolicyIssue
from policies.kinds import KindTable
from policies.models import Policy
from policies.rules import CompiledRule, compile_rules

__all__ = ["MAX_DEPTH", "MAX_EXPANDED_CHARS", "MAX_NODES", "MAX_POLICY_BYTES", "LoadedPolicy", "load_policy",
           "load_policy_text", "read_yaml"]

#: The largest policy (or policy test) file read, in bytes of UTF-8.
MAX_POLICY_BYTES = 1024 * 1024
#: Levels of nesting (mappings and sequences), in the file and once aliases are expanded.
MAX_DEPTH = 64
#: Nodes, and characters of scalars, the file may stand for once its aliases are expanded.
MAX_NODES = 50_000
MAX_EXPANDED_CHARS = 8 * MAX_POLICY_BYTES

Loc = tuple[str | int, ...]
_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_RESERVED: set[str] = set()  # top-level keys kept for a later version (none now)
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy ready to serve, with the non-fatal findings about it."""

    policy: Policy
    source: str
    warnings: tuple[PolicyIssue, ...] = ()
    lines: Mapping[Loc, int] = field(default_factory=dict, compare=False, repr=False)
    rules: tuple[CompiledRule, ...] = ()
    sha256: str = ""

    def issue(self, loc: Loc, message: str) -> PolicyIssue:
        """A ``PolicyIssue`` located at ``loc`` in this policy's file (for later checks)."""
        return PolicyIssue(self.source, _line_of(self.lines, loc), dotted(loc), message)


@dataclass
class _Reader:
    """Builds plain data from YAML nodes, recording each node's line and env problems."""

    file: str
    env: Mapping[str, str]
    loader: yaml.SafeLoader
    lines: dict[Loc, int] = field(default_factory=dict)
    issues: list[PolicyIssue] = field(default_factory=list)

    def build(self, node: yaml.Node, loc: Loc) -> object:
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, loc + (i,)) for i, item in enumerate(node.value)]
        value = self.loader.construct_object(node, deep=True)
        return self.expand(value, loc, node) if isinstance(value, str) else value

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, object]:
        explicit = {id(k) for k, _ in node.value if k.tag != _MERGE_TAG}
        self.loader.flatten_mapping(node)  # merged (<<) pairs first, so explicit keys win
        out: dict[str, object] = {}
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = self.loader.construct_object(key_node, deep=True)
            if isinstance(key, int | float) and not isinstance(key, bool):
                key = str(key)
            if not isinstance(key, str):
                self._issue(loc, key_node, f"keys must be strings, not {type(key).__name__}")
                continue
            if id(key_node) in explicit:
                if key in seen:
                    self._issue(loc + (key,), key_node, f"duplicate key {key!r}")
                seen.add(key)
            self.lines[loc + (key,)] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, loc + (key,))
        return out

    def expand(self, text: str, loc: Loc, node: yaml.Node) -> str:
        def sub(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            value = self.env.get(name)
            if value or (value is not None and default is None):
                return value
            if default is not None:  # as in POSIX shells: unset *or empty* takes the default
                return default
            self._issue(loc, node, f"environment variable {name} is not set "
                                   f"(use ${{{name}:-}} to make it optional)")
            return ""

        return _ENV_RE.sub(sub, text) if "$" in text else text

    def _issue(self, loc: Loc, node: yaml.Node, message: str) -> None:
        self.issues.append(PolicyIssue(self.file, node.start_mark.line + 1, dotted(loc), message))


def dotted(loc: Loc) -> str:
    """``("models", "chat", "targets", 1)`` → ``models.chat.targets[1]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(lines: Mapping[Loc, int], loc: Loc) -> int | None:
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc)


def load_policy(path: str | Path, env: Mapping[str, str], *, kinds: KindTable) -> LoadedPolicy:
    """Load and validate the policy file at ``path``; raise ``PolicyError`` on any problem."""
    file = str(path)
    return load_policy_text(_read(path, "policy file"), env, kinds=kinds, file=file)


def _read(path: str | Path, what: str) -> str:
    """The text of ``path``, read no further than ``MAX_POLICY_BYTES`` (+1 to tell it is over)."""
    try:
        with Path(path).open("rb") as f:
            raw = f.read(MAX_POLICY_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([PolicyIssue(str(path), None, "", f"cannot read {what}: {exc}")]) from exc
    _check_size(text, str(path))
    return text


def _check_size(text: str, file: str) -> None:
    if len(text) > MAX_POLICY_BYTES or len(text.encode()) > MAX_POLICY_BYTES:
        raise PolicyError([PolicyIssue(file, None, "", f"file is larger than {MAX_POLICY_BYTES / 2**20:g} MiB "
                                                       "(the limit for policy files)")])


def load_policy_text(text: str, env: Mapping[str, str], *, kinds: KindTable, file: str = "<policy>"
                     ) -> LoadedPolicy:
    """Load a policy from YAML text (``file`` is only used in messages)."""
    _check_size(text, file)
    data, lines, issues = _parse_yaml(text, env, file)
    issues += _references(data, lines, file)
    rules: tuple[CompiledRule, ...] = ()
    try:
        policy = Policy.model_validate(data, context=kinds)
    except ValidationError as exc:
        issues += [_issue_from_pydantic(err, lines, file) for err in exc.errors()]
    else:
        rules, rule_issues = compile_rules(policy, lambda loc, msg: PolicyIssue(
            file, _line_of(lines, loc), dotted(loc), msg))
        issues += rule_issues
    if issues:
        raise PolicyError(sorted(issues, key=lambda i: i.line or 0))
    digest = hashlib.sha256(text.encode()).hexdigest()
    return LoadedPolicy(policy, file, tuple(_warnings(policy, lines, file)), lines, rules, digest)


def read_yaml(path: str | Path) -> object:
    """The plain data in the YAML file at ``path`` (safe tags only, no ``${ENV}`` expansion),
    for files next to policies such as policy tests. Raise ``PolicyError`` naming the file,
    and the line when YAML knows it, if the file cannot be read or parsed."""
    file = str(path)
    text = _read(path, "file")
    loader = _LimitedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, file)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise PolicyError([PolicyIssue(file, mark.line + 1 if mark else None, "", f"invalid YAML: {msg}")]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError([PolicyIssue(file, None, "", f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()


class _LimitedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses to compose more than ``MAX_DEPTH`` levels of nesting (the
    composer recurses once per level: deeper files would exhaust the stack) or more than
    ``MAX_NODES`` nodes (composing costs ~40 µs a node in pure Python: stop early)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH or self._nodes > MAX_NODES:
                problem = (f"nesting deeper than {MAX_DEPTH} levels" if self._depth > MAX_DEPTH
                           else f"more than {MAX_NODES} nodes")
                raise yaml.composer.ComposerError(None, None, problem,
                                                  self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node, file: str) -> None:
    """Raise ``PolicyError`` when the document, with its aliases expanded, would exceed
    ``MAX_NODES``, ``MAX_EXPANDED_CHARS`` or ``MAX_DEPTH``, or refers to itself. An alias is
    the very node object of its anchor, so each node's expanded (nodes, chars, depth) is
    computed once, children first, without recursion: linear in the composed file."""
    done: dict[int, tuple[int, int, int]] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, ready = stack.pop()
        key = id(node)
        if ready:
            open_.discard(key)
            kids = [done[id(k)] for k in _children(node)]
            if isinstance(node, yaml.ScalarNode):
                nodes, chars, depth = 1, len(node.value), 0
            else:
                nodes = 1 + sum(k[0] for k in kids)
                chars, depth = sum(k[1] for k in kids), 1 + max((k[2] for k in kids), default=0)
            problem = _expansion_problem(nodes, chars, depth)
            if problem is not None:
                raise PolicyError([PolicyIssue(file, node.start_mark.line + 1, "",
                                               f"invalid YAML: this node {problem} once its aliases are expanded")])
            done[key] = (nodes, chars, depth)
            continue
        if key in done:
            continue
        if key in open_:
            raise PolicyError([PolicyIssue(file, node.start_mark.line + 1, "",
                                           "invalid YAML: an alias refers to a node that contains it")])
        open_.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in done)


def _expansion_problem(nodes: int, chars: int, depth: int) -> str | None:
    if nodes > MAX_NODES:
        return f"stands for more than {MAX_NODES} nodes"
    if chars > MAX_EXPANDED_CHARS:
        return f"stands for more than {MAX_EXPANDED_CHARS} characters of text"
    if depth > MAX_DEPTH:
        return f"nests deeper than {MAX_DEPTH} levels"
    return None


def _parse_yaml(text: str, env: Mapping[str, str], file: str
                ) -> tuple[dict[str, object], dict[Loc, int], list[PolicyIssue]]:
    loader = _LimitedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise PolicyError([PolicyIssue(file, None, "", "policy file is empty")])
        _check_expansion(node, file)
        reader = _Reader(file, env, loader)
        data = reader.build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        msg = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise PolicyError([PolicyIssue(file, line, "", f"invalid YAML: {msg}")]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError([PolicyIssue(file, None, "", f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise PolicyError([PolicyIssue(file, 1, "", "a policy must be a mapping with backends: and models:")])
    return data, reader.lines, reader.issues


def _issue_from_pydantic(err: Mapping[str, object], lines: dict[Loc, int], file: str) -> PolicyIssue:
    loc = tuple(p for p in err["loc"] if isinstance(p, str | int))  # type: ignore[attr-defined]
    kind, msg = str(err["type"]), str(err["msg"])
    if kind == "extra_forbidden":
        msg = f"unknown key {loc[-1]!r}"
    elif len(loc) == 1 and loc[0] in _RESERVED:
        msg = f"'{loc[0]}' is reserved for a later Switchyard version and is not supported yet"
    elif kind == "missing":
        msg = "required key is missing"
    elif msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    return PolicyIssue(file, _line_of(lines, loc), dotted(loc), msg)


def _references(data: dict[str, object], lines: dict[Loc, int], file: str) -> list[PolicyIssue]:
    """Cross-references, checked on the raw data so they are reported beside field errors."""
    backends, models, settings = data.get("backends"), data.get("models"), data.get("settings")
    issues = []
    if isinstance(backends, dict) and isinstance(models, dict):
        known = ", ".join(sorted(backends))
        for alias, spec in models.items():
            targets = spec.get("targets") if isinstance(spec, dict) else None
            for i, target in enumerate(targets if isinstance(targets, list) else ()):
                if isinstance(target, str) and target not in backends:
                    loc: Loc = ("models", alias, "targets", i)
                    issues.append(PolicyIssue(file, _line_of(lines, loc), dotted(loc),
                                              f"unknown backend {target!r} (backends: {known})"))
    telemetry = data.get("telemetry")
    reference = telemetry.get("reference_backend") if isinstance(telemetry, dict) else None
    if isinstance(reference, str) and isinstance(backends, dict) and reference not in backends:
        loc = ("telemetry", "reference_backend")
        issues.append(PolicyIssue(file, _line_of(lines, loc), dotted(loc),
                                  f"unknown backend {reference!r} (backends: {', '.join(sorted(backends))})"))
    default = settings.get("default_alias") if isinstance(settings, dict) else None
    if isinstance(default, str) and not (isinstance(models, dict) and default in models):
        loc = ("settings", "default_alias")
        issues.append(PolicyIssue(file, _line_of(lines, loc), dotted(loc),
                                  f"unknown model alias {default!r}"))
    return issues


def _warnings(policy: Policy, lines: dict[Loc, int], file: str) -> list[PolicyIssue]:
    out = []
    for name, spec in policy.backends.items():
        if not spec.has_credentials:
            loc: Loc = ("backends", name, "api_key")
            out.append(PolicyIssue(file, _line_of(lines, loc) or _line_of(lines, loc[:2]), dotted(loc),
                                   "no API key: this backend is disabled until one is set"))
    for alias, model in policy.models.items():
        if not any(policy.backends[t].has_credentials for t in model.targets):
            loc = ("models", alias, "targets")
            out.append(PolicyIssue(file, _line_of(lines, loc), dotted(loc),
                                   "every target is disabled: requests for this alias will get 503"))
    return out
