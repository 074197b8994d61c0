"""``RedisStore``'s lane (``router/state/redis_lane.py``): the request path's commands on one
pipelined connection. Replies reach their own callers under concurrency and cancellation; a
timeout retires the connection without failing the calls still within their deadline; a lost
script cache (EVAL fallback), a password, a database number and a unix socket work as through
the client; an error reply and a closed store are ``StoreUnavailable``; uvloop works too.

The shared Redis (127.0.0.1:6379 or ``SWITCHYARD_TEST_REDIS_URL``) for what only reads and
writes its own prefix; a ``redis-server`` of the test's own (started and stopped here, by
PID) for what pauses the server, flushes its scripts or needs a password or a unix socket.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from router.state.redis_store import RedisStore
from router.state.store import Budget, StoreUnavailable, Window
from tests.router.state.test_stores import REDIS_URL, W, _redis_answers, _stop, free_port, redis_store

T0 = 3_000_000.0


async def test_concurrent_calls_get_their_own_replies_on_one_connection(redis_up: None) -> None:
    async with redis_store(timeout_s=2.0) as store:
        opened = 0
        open_lane = store._open_lane

        async def counting() -> asyncio.StreamWriter:
            nonlocal opened
            opened += 1
            return await open_lane()

        store._open_lane = counting  # type: ignore[method-assign]
        store._lane._opener = counting  # type: ignore[union-attr]
        await asyncio.gather(*(store.set_blob(f"{{t}}:k{i}", f"value {i}".encode(), 60) for i in range(200)))
        values = await asyncio.gather(*(store.get_blob(f"{{t}}:k{i}") for i in range(200)))
        assert values == [f"value {i}".encode() for i in range(200)]
        results = await asyncio.gather(*(store.hit([Window("{t}:rpm", 1, 1000)], W, T0) for _ in range(100)))
        assert sorted(r[0].used for r in results) == list(range(1, 101))
        assert opened == 1


async def test_a_cancelled_call_does_not_shift_the_replies(redis_up: None) -> None:
    async with redis_store(timeout_s=2.0) as store:
        await store.set_blob("{t}:a", b"A", 60)
        await store.set_blob("{t}:b", b"B", 60)
        for _ in range(20):
            early = asyncio.ensure_future(store.get_blob("{t}:a"))
            await asyncio.sleep(0)  # sent: its reply is on its way
            early.cancel()
            assert await store.get_blob("{t}:b") == b"B"
            assert await store.get_blob("{t}:a") == b"A"


async def test_an_error_reply_is_unavailable(redis_up: None) -> None:
    async with redis_store() as store:
        with pytest.raises(StoreUnavailable, match=r"^redis test: ResponseError: ERR unknown command"):
            await store._call("test", (b"NO-SUCH-COMMAND",))
        assert await store.get_blob("{t}:absent") is None  # the connection still works


async def test_a_closed_store_is_unavailable(redis_up: None) -> None:
    store = RedisStore(REDIS_URL, prefix=f"sytest-{uuid.uuid4().hex[:12]}")
    assert await store.get_blob("{t}:absent") is None
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.get_blob("{t}:absent")


def test_works_on_uvloop(redis_up: None) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        async with redis_store() as store:
            (r,) = await store.hit([Window("{t}:rpm", 1, 10)], W, T0)
            assert r.used == 1
            a = await store.admit([Window("{t}:rpm", 1, 10)], W, T0, [Budget("{t}:day", 5, 100, 60)], "{t}:x", 1000)
            assert (a.windows[0].used, a.reserved, a.values, a.leader) == (2, True, [5], True)
            await store.adjust([Budget("{t}:day", -2, 100, 60)], ("{t}:x", b"answer", 60))
            assert await store.probe("{t}:x") == (b"answer", False)

    uvloop.run(main())


# -- on a redis-server of our own ---------------------------------------------------------

@asynccontextmanager
async def own_redis(tmp_path: Path, *options: str) -> AsyncIterator[int]:
    """A fresh redis-server on a free port (no persistence), stopped by PID at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed", pytrace=False)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--daemonize", "no", "--dir", str(tmp_path), *options,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(300):
            if await asyncio.to_thread(_redis_answers_or_auth, port):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail(f"redis-server on port {port} did not start", pytrace=False)
        yield port
    finally:
        await _stop(proc)


def _redis_answers_or_auth(port: int) -> bool:
    import socket

    if _redis_answers("127.0.0.1", port):
        return True
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"-NOAUTH")
    except OSError:
        return False


async def test_a_timeout_retires_the_connection_but_not_the_calls_within_their_deadline(tmp_path: Path) -> None:
    async with own_redis(tmp_path) as port:
        admin = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
        store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
        try:
            assert await store.get_blob("{t}:x") is None
            old = store._lane._wire  # type: ignore[union-attr]
            await admin.execute_command("CLIENT", "PAUSE", "650", "ALL")  # every client waits 0.65 s
            first = asyncio.ensure_future(store.get_blob("{t}:x"))
            await asyncio.sleep(0.25)
            later = asyncio.ensure_future(store.get_blob("{t}:x"))  # sent 0.25 s later on the same connection
            start = time.monotonic()
            with pytest.raises(StoreUnavailable, match="no answer within 0.5 s"):
                await first
            assert time.monotonic() - start < 0.35
            assert await later is None  # answered at 0.65 s, within its own deadline (0.75 s)
            assert old is not None and old.retired and old.lost is not None  # closed once drained
            assert await store.get_blob("{t}:x") is None  # a new connection
            assert store._lane._wire is not old  # type: ignore[union-attr]
        finally:
            await store.close()
            await admin.aclose()


async def test_lost_scripts_are_loaded_again(tmp_path: Path) -> None:
    async with own_redis(tmp_path) as port:
        admin = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        try:
            assert (await store.hit([Window("{t}:rpm", 1, 10)], W, T0))[0].used == 1
            await admin.script_flush()
            assert (await store.hit([Window("{t}:rpm", 1, 10)], W, T0))[0].used == 2  # NOSCRIPT, then EVAL
            await store.adjust([Budget("{t}:day", 7, 100, 60)])
            assert await store.read(["{t}:day"]) == [7]
        finally:
            await store.close()
            await admin.aclose()


async def test_password_database_and_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    async with own_redis(tmp_path, "--requirepass", "s3cret", "--unixsocket", str(sock)) as port:
        for url in (f"redis://:s3cret@127.0.0.1:{port}/3", f"unix://{sock}?db=5&password=s3cret"):
            store = RedisStore(url)
            try:
                (r,) = await store.hit([Window("{t}:rpm", 1, 10)], W, T0)
                assert r.used == 1
                b, _ = divmod(T0, W)
                assert await store._redis.get(f"switchyard:rl:{{t}}:rpm:{int(b)}") == "1"  # in that database
            finally:
                await store._redis.flushdb()
                await store.close()
        with pytest.raises(StoreUnavailable, match="^redis cache get: AuthenticationError"):
            store = RedisStore(f"redis://:wrong@127.0.0.1:{port}/0")
            try:
                await store.get_blob("{t}:x")
            finally:
                await store.close()


async def test_tls(tmp_path: Path) -> None:
    """``rediss://``: the lane takes over the TLS transport the client's connection opened."""
    openssl, binary = shutil.which("openssl"), shutil.which("redis-server")
    if openssl is None or binary is None:
        pytest.fail("openssl and redis-server are needed for the TLS test", pytrace=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = await asyncio.create_subprocess_exec(
        openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    assert await made.wait() == 0
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-cert-file", str(cert),
        "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
        "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    store = RedisStore(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}", timeout_s=2.0)
    try:
        for _ in range(300):
            try:
                await store.ping()
                break
            except StoreUnavailable:
                await asyncio.sleep(0.01)
        (r,) = await store.hit([Window("{t}:rpm", 1, 10)], W, T0)
        assert r.used == 1
        await store.set_blob("{t}:x", b"x" * 100_000, 60)  # more than one TLS record
        assert await asyncio.gather(*(store.get_blob("{t}:x") for _ in range(20))) == [b"x" * 100_000] * 20
    finally:
        await store.close()
        await _stop(proc)
