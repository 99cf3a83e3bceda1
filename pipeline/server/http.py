"""The few raw-ASGI pieces the hot routes share: error type, body reading, responses.

The scoring routes bypass Starlette's Request/Response objects on purpose: on a 0.1 ms model the
framework's per-request layers cost more than the prediction (see docs/architecture.md, measured facts).
"""

from __future__ import annotations

from typing import Any

from pipeline.runtime.jsonio import dumps


class HTTPError(Exception):
    """An answer other than 200, with the message the caller sees as ``{"error": message}``.

    The model runtime raises no HTTPError: its ``InvalidInput`` is answered 400 by the app.
    """

    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


JSON = b"application/json"
# After a 413 the rest of the body is never read: close the connection rather than drain it.
_CLOSE = ((b"connection", b"close"),)


async def respond(send: Any, status: int, body: bytes, content_type: bytes = JSON,
                  headers: tuple[tuple[bytes, bytes], ...] | list = ()) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                    *headers],
    })
    await send({"type": "http.response.body", "body": body})


def error_body(message: str) -> bytes:
    return dumps({"error": message})


async def read_body(receive: Any, limit: int, content_length: bytes | None) -> bytes:
    """The whole request body, or 413 as soon as it is known to exceed ``limit`` bytes.

    The declared Content-Length is checked before reading anything; a chunked body is counted as
    it streams, so neither kind ever buffers more than ``limit`` bytes.
    """
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise HTTPError(400, "Content-Length is not a number") from None
        if declared > limit:
            raise HTTPError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes", _CLOSE)
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise HTTPError(413, f"request body exceeds the limit of {limit} bytes", _CLOSE)
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPError(400, "the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, f"request body exceeds the limit of {limit} bytes", _CLOSE)
        chunks.append(chunk)
    return b"".join(chunks)
