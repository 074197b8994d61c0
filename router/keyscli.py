"""``switchyard keys create|list|revoke``: manage virtual keys in the shared store directly
(the same records the admin API writes). Keys are printed once, at creation, and stored
only as their sha256."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Mapping

from router.state.keys import create_key, find_key
from router.state.store import StoreUnavailable

__all__ = ["parse_duration", "run_keys"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match:
        raise ValueError(f"bad duration {text!r}: use e.g. 3600s, 90m, 12h, 30d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_keys(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    url = args.redis_url or env.get("SWITCHYARD_REDIS_URL")
    if not url:
        print("switchyard: keys live in the shared store: give --redis-url or SWITCHYARD_REDIS_URL", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, url))
    except (StoreUnavailable, ValueError) as exc:
        print(f"switchyard: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, url: str) -> int:
    from router.state.redis_store import RedisStore

    store = RedisStore(url, timeout_s=2.0)
    try:
        if args.keys_command == "create":
            expires = time.time() + parse_duration(args.expires) if args.expires else None
            key, record = await create_key(store, args.team, args.name, expires, args.budget_usd)
            print(key)
            print(f"id {record.key_hash[:12]} team {args.team} — store this key now: it is not shown again",
                  file=sys.stderr)
            return 0
        if args.keys_command == "list":
            for r in await store.list_keys(args.team):
                state = "revoked" if r.revoked else ("expired" if r.expires_at and r.expires_at < time.time() else "ok")
                print(f"{r.key_hash[:12]}  {r.team:16s} {state:8s} {r.name}")
            return 0
        found = await find_key(store, args.id)
        if found is None:
            print(f"switchyard: no single key matches {args.id[:12]!r}", file=sys.stderr)
            return 1
        await store.revoke_key(found.key_hash)
        print(f"revoked {found.key_hash[:12]}")
        return 0
    finally:
        await store.close()
