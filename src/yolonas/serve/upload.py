"""The image bytes of a request: a multipart upload's one file, or the raw body, never more than the size limit.

The limit holds before and while reading: a declared Content-Length over it is refused unread, and a body sent
without one (chunked) is cut off as soon as it passes the limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from yolonas.serve.errors import ApiError

RAW_TYPES = "image/* or application/octet-stream"
HOW = f"send the image as multipart/form-data (field 'file') or as the raw body with Content-Type {RAW_TYPES}"


async def read_upload(request: Request, max_bytes: int) -> tuple[bytes, str | None]:
    """(the image's bytes, its file name for a multipart upload); ApiError 413/415/400 when the body is too
    large, of a type we do not read, or holds no file."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"body of {int(declared):,} bytes is over the limit of {max_bytes:,} (--max-mb)")
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    try:
        if kind == "multipart/form-data":
            return await _multipart_file(request, max_bytes)
        if kind and not (kind.startswith("image/") or kind == "application/octet-stream"):
            raise ApiError(415, f"Content-Type {kind} is not read here: {HOW}")
        return b"".join([chunk async for chunk in _limited(request, max_bytes)]), None
    except ClientDisconnect:
        raise ApiError(400, "the client disconnected before the body was complete") from None


async def _limited(request: Request, max_bytes: int) -> AsyncIterator[bytes]:
    """The body's chunks, stopping with 413 once more than `max_bytes` have come."""
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise ApiError(413, f"body is over the limit of {max_bytes:,} bytes (--max-mb)")
        yield chunk


async def _multipart_file(request: Request, max_bytes: int) -> tuple[bytes, str | None]:
    """The one file part of a multipart body (any field name; 'file' by convention)."""
    parser = MultiPartParser(request.headers, _limited(request, max_bytes), max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise ApiError(400, f"malformed multipart body ({e.message}): {HOW}") from None
    try:
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise ApiError(400, f"the multipart body has no file part: {HOW}")
        return await files[0].read(), _printable(files[0].filename)
    finally:
        await form.close()


def _printable(name: str | None, limit: int = 200) -> str | None:
    """A client's file name as it may be echoed and logged: printable characters only, and not too long."""
    if name is None:
        return None
    return "".join(c for c in name if c.isprintable())[:limit] or None
