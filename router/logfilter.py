"""``CredentialFilter``: the last line of defence between a log record and the log — every
record a handler writes (the gateway's own, aiohttp's access and error logs, litellm's) has
its message and traceback text scrubbed of credentials (``backends.Scrubber.credentials``:
every configured key, bearer tokens, key-shaped strings). Addresses and other detail stay.

Error messages are scrubbed where they are made (``backends.scrub``); this catches what is
not, such as the text of a third-party exception in a traceback. ``switchyard serve``
installs it on the process's log handlers (``install``).
"""

from __future__ import annotations

import logging

from backends import Scrubber

__all__ = ["CredentialFilter", "install"]


class CredentialFilter(logging.Filter):
    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__()
        self.scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.scrubber.credentials(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrubber.credentials(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrubber.credentials(record.stack_info)
        return True


def install(scrubber: Scrubber, logger: logging.Logger | None = None) -> CredentialFilter:
    """Add a ``CredentialFilter`` to every handler of ``logger`` (default: the root logger)."""
    found = CredentialFilter(scrubber)
    for handler in (logger or logging.getLogger()).handlers:
        for old in [f for f in handler.filters if isinstance(f, CredentialFilter)]:
            handler.removeFilter(old)
        handler.addFilter(found)
    return found
