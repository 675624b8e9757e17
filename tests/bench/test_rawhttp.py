"""bench/rawhttp.py against a canned server: keep-alive, Content-Length, and loud refusals."""

from __future__ import annotations

import asyncio

import pytest

from bench import rawhttp


async def _serve(responses: list[bytes]) -> tuple[asyncio.Server, str, list[bytes]]:
    """A server answering each request on a connection with the next canned response."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for response in responses:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            seen.append(head + await reader.readexactly(length))
            writer.write(response)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", seen


def test_two_requests_on_one_connection_and_the_body_sent() -> None:
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: b\r\n\r\n{}"
    busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"

    async def run() -> None:
        server, url, seen = await _serve([ok, busy])
        async with server:
            connection = await rawhttp.Connection.open(url)
            raw = rawhttp.multipart_post(url, "/detect", [("files", "a.jpg", b"\xff\xd8AB")])
            assert await connection.request(raw) == (200, b"{}")
            assert await connection.request(raw) == (503, b"busy")
            await connection.close()
        assert seen == [raw, raw]
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"POST /detect HTTP/1.1\r\n")
        assert f"Content-Length: {len(body)}".encode() in head
        assert b'name="files"; filename="a.jpg"' in body and b"\xff\xd8AB\r\n" in body

    asyncio.run(run())


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", "chunked"),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{}", "Content-Length"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP"),
    ],
)
def test_what_it_does_not_speak_is_an_error(response: bytes, message: str) -> None:
    async def run() -> None:
        server, url, _ = await _serve([response])
        async with server:
            connection = await rawhttp.Connection.open(url)
            with pytest.raises(rawhttp.RawHTTPError, match=message):
                await connection.request(rawhttp.multipart_post(url, "/x", [("file", "f", b"1")]))
            await connection.close()

    asyncio.run(run())


def test_only_plain_http_urls() -> None:
    with pytest.raises(rawhttp.RawHTTPError, match="http://"):
        asyncio.run(rawhttp.Connection.open("https://example.org"))
