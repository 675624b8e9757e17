"""A minimal HTTP/1.1 client for load generation: one kept-alive connection per worker, each
request written as prebuilt bytes, each response read by its Content-Length.

The benchmarks run their load generator on the service's own cores. There httpx spends 2-3 ms
of CPU per ``/detect`` request (more than the int8 model per image), CPU the service then lacks;
this client spends a small fraction of that, so the figures say more about the service. It
speaks only what the benchmark needs (no TLS, no redirects, no chunked responses) and fails
loudly on anything else.
"""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import urlsplit

MAX_HEADER_LINES = 100


class RawHTTPError(RuntimeError):
    """A response this client does not handle, or a status other than the one expected."""


def multipart_post(url: str, path: str, files: list[tuple[str, str, bytes]]) -> bytes:
    """The bytes of ``POST path`` with a multipart/form-data body of ``(field, filename, data)``
    parts, for the server at ``url``; keep-alive."""
    boundary = secrets.token_hex(16)
    parts = []
    for field, filename, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        parts += [head.encode(), data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    body = b"".join(parts)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {urlsplit(url).netloc}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One kept-alive connection; :meth:`request` sends one request and reads its response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise RawHTTPError(f"only http://host:port URLs, not {url!r}")
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """(status, body) of the response to ``raw``."""
        self._writer.write(raw)
        await self._writer.drain()
        status_line = await self._reader.readline()
        fields = status_line.split(None, 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/1."):
            raise RawHTTPError(f"not an HTTP/1.x response: {status_line[:80]!r}")
        length: int | None = None
        for _ in range(MAX_HEADER_LINES):
            line = await self._reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise RawHTTPError("chunked responses are not supported")
        else:
            raise RawHTTPError(f"more than {MAX_HEADER_LINES} header lines")
        if length is None:
            raise RawHTTPError("response without Content-Length")
        return int(fields[1]), await self._reader.readexactly(length)

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()
