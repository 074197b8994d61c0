"""The store fixtures of ``test_stores`` (``store``: both stores; ``redis_up``), for every module here."""

from tests.router.state.test_stores import redis_up, store  # noqa: F401
