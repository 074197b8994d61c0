"""Credentials and internal addresses never leave a backend in an error (issue 11, item 3):
the ``Scrubber`` rules, then every adapter of the contract suite (``build_backend`` wraps
each one in a ``ScrubbedBackend``) against a fake upstream that echoes the key."""

from __future__ import annotations

import secrets

import pytest

from backends.base import BackendConfig, TimeLimits
from backends.errors import UpstreamAuthError, UpstreamConnectError
from backends.scrub import Scrubber
from tests.backends.harness import Harness
from tests.backends.test_backend_contract import MODES, attempt
from tests.fakes.faults import Fault

ODD_KEY = "Zq" + secrets.token_hex(12)  # a configured key of no known shape: only an exact match finds it


def config(name: str = "gpu", base_url: str | None = "http://10.1.2.3:8000/v1", api_key: str | None = ODD_KEY,
           headers: tuple[tuple[str, str], ...] = ()) -> BackendConfig:
    return BackendConfig(name=name, kind="vllm", model="m", base_url=base_url, api_key=api_key, headers=headers)


@pytest.mark.parametrize("secret", [
    ODD_KEY, "sk-proj-" + "a1B2" * 8, "sk-ant-api03-" + "x9" * 20, "AKIAIOSFODNN7EXAMPLE",
    "AIza" + "S" * 35, "ghp_" + "a1" * 18, "xoxb-1234567890-abcdef",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-nature_1",
])
def test_credentials_are_removed_wherever_they_appear(secret: str) -> None:
    scrub = Scrubber.for_backends([config()])
    for text in (f"Incorrect API key provided: {secret}.", f"Authorization: Bearer {secret}",
                 f'{{"api_key": "{secret}"}}', f"GET /v1/models?key={secret}&alt=json"):
        for out in (scrub.credentials(text), scrub.public(text)):
            assert secret not in out and "[redacted]" in out, out


def test_header_secrets_bearer_tokens_and_url_passwords() -> None:
    scrub = Scrubber.for_backends([config(api_key=None, headers=(("api-key", "azure0key0value"),
                                                                  ("X-Team", "search")))])
    assert scrub.credentials("bad api-key azure0key0value") == "bad api-key [redacted]"
    assert scrub.credentials("team search") == "team search"  # not a credential header
    assert "hunter2" not in scrub.credentials("redis://user:hunter2@10.0.0.9:6379/0")
    assert scrub.credentials("Bearer abc.def-123456") == "Bearer [redacted]"


def test_addresses_become_the_backend_name_for_clients_and_stay_in_logs() -> None:
    scrub = Scrubber.for_backends([config()])
    text = ("Cannot connect to host 10.1.2.3:8000 ssl:default [Connect call failed ('10.1.2.3', 8000)]; "
            "redirected to http://169.254.169.254/latest/meta-data and gpu-2.internal:9000, [fd00::1]:80, "
            "localhost:11434")
    public = scrub.public(text)
    assert "10.1.2.3" not in public and "169.254" not in public and "internal" not in public
    assert "fd00" not in public and "11434" not in public
    assert public.startswith("Cannot connect to host gpu ssl:default")
    assert scrub.credentials(text) == text  # addresses are detail, not credentials
    assert scrub.public("GET http://10.1.2.3:8000/v1/chat/completions") == "GET gpu/chat/completions"


def test_an_address_two_backends_share_names_neither() -> None:
    scrub = Scrubber.for_backends([config("a", "http://127.0.0.1:8001/v1"), config("b", "http://127.0.0.1:8002/v1")])
    assert scrub.public("127.0.0.1:8002 refused") == "b refused"
    assert scrub.public("host 127.0.0.1 down") == "host [address] down"


@pytest.mark.parametrize("text", [
    "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens.",
    "prompt is too long: 210000 tokens > 200000 maximum", "Missing bearer authentication in header",
    "basic validation failed", "No route to host", "the host is down", "Overloaded",
    "messages: Unexpected role \"system\"", "per token pricing", "risk-averse task-force",
    "'temperature' must be a number between 0 and 2 (got 3.5)", "retry after 1.5 s",
])
def test_ordinary_provider_messages_are_left_alone(text: str) -> None:
    scrub = Scrubber.for_backends([config()])
    assert scrub.public(text) == text


def test_empty_and_short_configured_values_are_not_secrets() -> None:
    scrub = Scrubber.for_backends([config(api_key="x"), config("c", api_key="")])
    assert scrub.credentials("x marks the spot") == "x marks the spot"


# -- every adapter -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
async def test_an_upstream_401_echoing_the_key_leaves_without_it(adapter: Harness, mode: str) -> None:
    auth_type = "invalid_api_key" if adapter.spec.wire == "openai" else "authentication_error"
    adapter.fake.faults.push(Fault(status=401, error_type=auth_type,
                                   message=f"Incorrect API key provided: {ODD_KEY}. Sent: Bearer {ODD_KEY}"))
    exc = await attempt(adapter, mode, adapter.make(api_key=ODD_KEY))
    assert isinstance(exc, UpstreamAuthError)
    for text in (exc.message, exc.detail, str(exc)):
        assert ODD_KEY not in text, text
    assert "Incorrect API key provided: [redacted]" in exc.message  # the provider's message, minus the key
    assert f"contract-{adapter.spec.id}" in exc.message  # which backend
    assert exc.__cause__ is None and exc.__suppress_context__  # the raw third-party error stays behind


@pytest.mark.parametrize("mode", MODES)
async def test_a_dead_backend_is_named_not_addressed(adapter: Harness, mode: str) -> None:
    dead = adapter.dead_base_url()
    port = dead.split(":")[2].split("/")[0]
    exc = await attempt(adapter, mode, adapter.make(base_url=dead, limits=TimeLimits(1, 1, 1, 2)))
    assert isinstance(exc, UpstreamConnectError)
    assert "127.0.0.1" not in exc.message and port not in exc.message, exc.message
    assert f"contract-{adapter.spec.id}" in exc.message
