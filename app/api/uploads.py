"""Multipart image uploads for /detect: read with limits, decode in a thread pool, fail early.

The form is parsed here, after the API key check, rather than by FastAPI's ``File()``
parameters, so an unauthenticated client cannot make the server parse an upload and every
failure gets a message naming the problem. Decoding (Pillow) runs in the decode pool, never on
the event loop, and a bad image fails its request before anything reaches a batch. Decoding
is admitted by count and budgeted by pixels (read from the headers) before it starts: CPU time
follows pixels, not upload bytes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from fastapi import Depends, HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.deps import (
    SelectedDetectorsDep,
    ServicesDep,
    SettingsDep,
    decoding_slots,
    detect_room,
)
from app.request_context import record_images
from models.preprocessing import (
    InvalidImageError,
    PreprocessConfig,
    header_pixels,
    load_rgb,
    model_views,
)

FIELDS = ("file", "files")
CHUNK_BYTES = 1 << 20
MAX_TEXT_FIELDS = 16

OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,  # and exactly one of the two: app/openapi.py
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "one image"},
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "several images (up to DERMAFAKE_MAX_FILES)",
                        },
                    },
                }
            }
        },
    }
}


@dataclass(frozen=True)
class DecodedImage:
    filename: str
    pixels: dict[PreprocessConfig, torch.Tensor]  # uint8 (3, S, S) per model preprocessing


def decode_for(
    data: bytes, configs: list[PreprocessConfig], max_pixels: int
) -> dict[PreprocessConfig, torch.Tensor]:
    """Decode once (as small as the most demanding model allows), then each model's views
    (V, 3, S, S): its crop, and for native-crop models the half-scale view too."""
    img = load_rgb(data, max_pixels, min_side=max(c.decode_min_side for c in configs))
    return {config: model_views(img, config) for config in configs}


async def _read_limited(upload: UploadFile, name: str, limit: int) -> bytes:
    chunks, size = [], 0
    while chunk := await upload.read(CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"{name}: file too large: limit is {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_uploads(request: Request, settings: SettingsDep) -> list[tuple[str, bytes]]:
    """(filename, bytes) of every uploaded image, or a 4xx naming what is wrong."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise HTTPException(
            415,
            "no file uploaded: send multipart/form-data with the image in field 'file' "
            f"(or several in 'files'); got Content-Type {content_type or 'none'!r}",
        )
    try:
        form = await request.form(max_files=settings.max_files, max_fields=MAX_TEXT_FIELDS)
    except StarletteHTTPException as exc:  # Starlette's multipart errors are 400s
        if exc.status_code != 400:
            raise  # e.g. the body size limit (413)
        if "too many files" in str(exc.detail).lower():
            raise HTTPException(
                413, f"too many files: at most {settings.max_files} per request"
            ) from exc
        raise HTTPException(400, f"malformed multipart body: {exc.detail}") from exc
    try:
        items = form.multi_items()
        unexpected = sorted({key for key, _ in items if key not in FIELDS})
        if unexpected:
            raise HTTPException(
                422,
                f"unexpected form field(s) {unexpected}: send the image as 'file', "
                "or several as 'files'",
            )
        uploads = [(key, value) for key, value in items if key in FIELDS]
        if not uploads:
            raise HTTPException(422, "no file uploaded: send the image in form field 'file'")
        texts = [key for key, value in uploads if not isinstance(value, UploadFile)]
        if texts:
            raise HTTPException(422, f"form field {texts[0]!r} must be a file, not text")
        if len({key for key, _ in uploads}) > 1:
            raise HTTPException(
                422, "send one image as 'file' or several as 'files', not both in one request"
            )
        out = []
        for i, (_, upload) in enumerate(uploads):
            name = upload.filename or f"file{i}"
            out.append((name, await _read_limited(upload, name, settings.max_upload_bytes)))
        record_images(len(out))
        return out
    finally:
        await form.close()


def _named(name: str, exc: InvalidImageError) -> InvalidImageError:
    return type(exc)(f"{name}: {exc}")  # same class: 415 stays 415


def header_pixels_of(uploads: list[tuple[str, bytes]], max_pixels: int) -> list[int]:
    """Each upload's pixel count from its header (nothing decoded); 415/422 naming a bad one."""
    pixels = []
    for name, data in uploads:
        try:
            pixels.append(header_pixels(data, max_pixels))
        except InvalidImageError as exc:
            raise _named(name, exc) from exc
    return pixels


def check_request_pixels(pixels: list[int], limit: int) -> None:
    """413 when a request's images hold more pixels than ``limit`` together."""
    total = sum(pixels)
    if total > limit:
        raise HTTPException(
            413,
            f"too many pixels: {len(pixels)} image(s) of {total} pixels in all, limit {limit} "
            "per request; send fewer or smaller images",
        )


async def decoded_images(
    request: Request,
    services: ServicesDep,  # first: no point reading an upload while the models are loading
    detectors: SelectedDetectorsDep,  # then: an unknown model name fails before the upload
    room: Annotated[None, Depends(detect_room)],  # then: a full queue fails before the upload
    settings: SettingsDep,
    uploads: Annotated[list[tuple[str, bytes]], Depends(read_uploads)],
) -> list[DecodedImage]:
    """Decode every upload once, in the decode pool, to each asked model's input (one tensor
    per distinct preprocessing); 422 on a bad one. First, with room in the decode gate (else
    503), every header is read and the request's pixels summed (over the budget: 413), so no
    image is decoded for a request that is refused."""
    loop = asyncio.get_running_loop()
    configs = list(dict.fromkeys(d.preprocess for d in detectors))

    async def decode(name: str, data: bytes) -> DecodedImage:
        try:
            pixels = await loop.run_in_executor(
                services.image_pool, decode_for, data, configs, settings.max_pixels
            )
        except InvalidImageError as exc:
            raise _named(name, exc) from exc
        return DecodedImage(name, pixels)

    async with decoding_slots(request, len(uploads)):
        pixels = await loop.run_in_executor(
            services.image_pool, header_pixels_of, uploads, settings.max_pixels
        )
        check_request_pixels(pixels, settings.max_request_pixels)
        # A failed decode gives its slots back only when the request's other decodes are done
        # (return_exceptions). A request cancelled here (its client gone) gives them back at
        # once, while decodes already running in the pool finish on their own.
        done = await asyncio.gather(
            *(decode(name, data) for name, data in uploads), return_exceptions=True
        )
    for result in done:
        if isinstance(result, BaseException):
            raise result
    return [result for result in done if isinstance(result, DecodedImage)]


DecodedImagesDep = Annotated[list[DecodedImage], Depends(decoded_images)]
