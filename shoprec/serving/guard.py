"""The ASGI guard in front of every route: the bearer token, the body size limit, and request metrics."""

from __future__ import annotations

import hmac
import json
import logging
import time

from fastapi import HTTPException

from shoprec.serving.metrics import Metrics

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
TOKEN_ENV = "SHOPREC_API_TOKEN"
OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")


KNOWN_PATHS = frozenset({"/v1/recommend", "/v1/score", "/v1/search", "/admin/reload", "/livez", "/readyz", "/healthz",
                         "/metrics", "/openapi.json", "/docs"})


class Guard:
    """Pure ASGI middleware: request metrics, body size limit (413) and the bearer token (401/403)."""

    def __init__(self, app, metrics: Metrics, max_body: int, token: str | None):
        self.app, self.metrics, self.max_body = app, metrics, max_body
        self.token = token.encode() if token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope["path"]
        label = path if path in KNOWN_PATHS else "other"
        status = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            denied = self._check(scope, path)
            if denied:
                await _send_json(send_wrapper, *denied)
            else:
                await self.app(scope, self._limited(receive), send_wrapper)
        finally:
            code = status[0]
            m = self.metrics
            m.requests.labels(label, code).inc()
            if code >= 400:
                m.errors.labels(label, code).inc()
            m.latency.labels(label).observe(time.perf_counter() - t0)

    def _check(self, scope, path: str):
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return 413, {"detail": f"request body of {int(length)} bytes is over the limit of {self.max_body}"}, {}
        if self.token and (path.startswith("/v1/") or path.startswith("/admin/")):
            auth = headers.get(b"authorization", b"")
            scheme, _, given = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not given:
                return 401, {"detail": "missing bearer token: send Authorization: Bearer <token>"}, {
                    b"www-authenticate": b"Bearer"}
            if not hmac.compare_digest(given.strip(), self.token):
                return 403, {"detail": "wrong bearer token"}, {}
        return None

    def _limited(self, receive):
        seen = [0]
        limit = self.max_body

        async def wrapped():
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise BodyTooLarge(limit)
            return message

        return wrapped


class BodyTooLarge(HTTPException):
    """Raised while FastAPI reads a body without Content-Length that outgrows the limit (it re-raises HTTPExceptions)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is over the limit of {limit} bytes")


async def _send_json(send, status: int, body: dict, headers: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers.items()]})
    await send({"type": "http.response.body", "body": data})
