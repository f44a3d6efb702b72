"""The night's top-K per shopper in a key-value store (Redis) that the server reads before asking the model.

One key per shopper, ``shoprec:recs:{model_name}:{user_id}``, holding JSON::

    {"version": "3", "date": "2026-12-05", "items": [["p00012", 7.1], ...]}

(item id and score, best first; no titles, which the server has from its model: half the memory per shopper)

and one key per model, ``shoprec:recs:{model_name}:_meta``, saying which (date, version) was loaded last and
for how many shoppers. Writes go through a non-transactional pipeline in chunks; keys get an optional TTL so a
night whose batch did not run ages out instead of being served for ever. Loading the same (date, version)
again rewrites the same keys: nothing is duplicated.

The Redis client is an optional dependency (``pip install 'shoprec[recstore]'``), imported only when a store
is used; without it the error says how to install it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)

URL_ENV = "SHOPREC_REC_STORE_URL"
KEY_PREFIX = "shoprec:recs"
META = "_meta"


class RecStoreError(RuntimeError):
    """The store could not be reached or answered something unreadable."""


def _redis_module():
    try:
        import redis
    except ImportError:
        raise RecStoreError("the recommendation store needs the Redis client: pip install 'shoprec[recstore]' "
                            "(redis==8.2.0)") from None
    return redis


class RecStore:
    """Top-K lists of one model's shoppers in Redis at ``url`` (``redis://[:password@]host:port/db``, or
    ``rediss://`` for TLS). ``timeout``: seconds to connect and per command; the server keeps it short so a
    store that does not answer costs a request little before it falls back to the model."""

    def __init__(self, url: str, model_name: str, timeout: float = 2.0):
        redis = _redis_module()
        self.url, self.model_name = url, model_name
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           decode_responses=True)

    def key(self, user_id: str) -> str:
        return f"{KEY_PREFIX}:{self.model_name}:{user_id}"

    def write(self, recs: Iterable[tuple[str, list[dict]]], version: str, date: str, ttl_s: int = 0,
              chunk: int = 1000) -> int:
        """Write ``(user_id, items)`` pairs (items best first, dicts with item_id and score); returns how many shoppers.
        ``ttl_s`` > 0 sets each key to expire after that many seconds."""
        n, pipe = 0, self.client.pipeline(transaction=False)
        try:
            for user_id, items in recs:
                pairs = [[i["item_id"], i["score"]] for i in items]
                value = json.dumps({"version": str(version), "date": date, "items": pairs}, separators=(",", ":"))
                pipe.set(self.key(user_id), value, ex=ttl_s or None)
                n += 1
                if n % chunk == 0:
                    pipe.execute()
            meta = {"version": str(version), "date": date, "shoppers": n, "loaded_at": time.time()}
            pipe.set(self.key(META), json.dumps(meta), ex=ttl_s or None)
            pipe.execute()
        except Exception as e:  # redis raises ConnectionError, TimeoutError, ResponseError...
            raise RecStoreError(f"writing to the recommendation store at {_safe(self.url)} failed: {e}") from e
        log.info("rec store %s: %d shoppers of %s v%s (%s)%s", _safe(self.url), n, self.model_name, version, date,
                 f", TTL {ttl_s} s" if ttl_s else "")
        return n

    def read(self, user_id: str) -> dict | None:
        """The stored list of ``user_id`` (``{"version", "date", "items": [{"item_id", "score"}, ...]}``), or None
        when the store has none."""
        value = self._get(user_id)
        if value is None:
            return None
        try:
            value["items"] = [{"item_id": i, "score": s} for i, s in value["items"]]
        except (KeyError, TypeError, ValueError) as e:
            raise RecStoreError(f"unreadable value at {self.key(user_id)}: {e!r}") from e
        return value

    def meta(self) -> dict | None:
        """What was loaded last for this model (version, date, shoppers, loaded_at), or None."""
        return self._get(META)

    def _get(self, name: str) -> dict | None:
        try:
            raw = self.client.get(self.key(name))
        except Exception as e:
            raise RecStoreError(f"reading from the recommendation store at {_safe(self.url)} failed: {e}") from e
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise RecStoreError(f"unreadable value at {self.key(name)}: {e}") from e

    def close(self) -> None:
        self.client.close()


def _safe(url: str) -> str:
    """The URL without a password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
