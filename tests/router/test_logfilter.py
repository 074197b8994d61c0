"""The log handlers of ``switchyard serve`` never write a credential (issue 11, item 3): not in
a message, its arguments, nor a traceback's exception text; other detail stays."""

from __future__ import annotations

import io
import logging

from backends import BackendConfig, Scrubber
from router.logfilter import CredentialFilter, install

KEY = "Zq" + "7f" * 14


def test_messages_arguments_and_tracebacks_are_scrubbed() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test.logfilter")
    logger.propagate, logger.level = False, logging.DEBUG
    logger.addHandler(handler)
    scrubber = Scrubber.for_backends([BackendConfig(name="gpt", kind="openai", model="m", api_key=KEY,
                                                    base_url="http://10.0.0.5:8000/v1")])
    try:
        install(scrubber, logger)
        install(scrubber, logger)  # idempotent: one filter per handler
        assert sum(isinstance(f, CredentialFilter) for f in handler.filters) == 1
        logger.warning("upstream said %s via %s", f"bad key {KEY}", "http://10.0.0.5:8000/v1")
        try:
            raise RuntimeError(f"litellm.AuthenticationError: Incorrect API key provided: {KEY}")
        except RuntimeError:
            logger.exception("unexpected")
        logger.info("POST /v1/chat/completions?key=AIza%s 200", "B" * 35)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert KEY not in text and "AIza" not in text, text
    assert "bad key [redacted] via http://10.0.0.5:8000/v1" in text  # the address is detail: kept
    assert "RuntimeError: litellm.AuthenticationError: Incorrect API key provided: [redacted]" in text
    assert "Traceback" in text
