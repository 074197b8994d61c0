"""Sticky sessions for closed providers: the session's last closed backend moves ahead of the
other closed targets only — never ahead of a self-hosted one, never when it left the plan or
its circuit is not closed."""

from __future__ import annotations

from policies import Plan
from router.gateway import StickySessions

CLOSED = {"gpt", "claude", "gemini"}


def keep(sessions: StickySessions, targets: tuple[str, ...], healthy: bool = True) -> tuple[str, ...]:
    plan = Plan(alias="chat", rule="r", targets=targets, allowed=frozenset(targets))
    return sessions.keep(plan, "s", lambda t: t in CLOSED, lambda t: healthy).targets


def test_the_last_closed_backend_moves_ahead_of_the_other_closed_targets_only() -> None:
    sessions = StickySessions()
    assert keep(sessions, ("local", "gpt", "claude")) == ("local", "gpt", "claude")  # nothing remembered
    sessions.answered("s", "claude")
    assert keep(sessions, ("local", "gpt", "claude")) == ("local", "claude", "gpt")
    assert keep(sessions, ("gpt", "local", "gemini", "claude")) == ("claude", "local", "gpt", "gemini")
    assert keep(sessions, ("local", "gpt")) == ("local", "gpt")  # not in this plan
    assert keep(sessions, ("local", "gpt", "claude"), healthy=False) == ("local", "gpt", "claude")


def test_it_forgets_the_least_recently_used_sessions() -> None:
    sessions = StickySessions()
    sessions.SIZE = 2
    for s in ("a", "b", "c"):
        sessions.answered(s, "gpt")
    assert "a" not in sessions._last and list(sessions._last) == ["b", "c"]
