"""The OpenAPI schema says what this server does with these settings: bearer auth on the model
routes (every operation not tagged ``probes``) only when an API key is set, /generate's ``n``
capped at ``max_generate_n``, /detect's body needing ``file`` or ``files`` (app/api/uploads.py).
Schemathesis checks the schema against a real server (tests/app/test_server.py)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.settings import Settings

SCHEME = "bearer"
OPEN_TAGS = {"probes"}  # /healthz, /readyz, /metrics: never behind the key


def install_openapi(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        if settings.api_key is not None:
            schema.setdefault("components", {}).setdefault("securitySchemes", {})[SCHEME] = {
                "type": "http",
                "scheme": "bearer",
                "description": "the server's DERMAFAKE_API_KEY",
            }
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                if settings.api_key is not None and not OPEN_TAGS & set(operation["tags"]):
                    operation["security"] = [{SCHEME: []}]
                if path == "/generate":
                    _cap_n(schema, operation, settings.max_generate_n)
                if path == "/detect":
                    _require_files(operation, settings.max_files)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _cap_n(schema: dict[str, Any], operation: dict[str, Any], limit: int) -> None:
    """``n``'s upper bound is a setting, not a type: written into the schema per server."""
    for parameter in operation.get("parameters", []):
        if parameter["name"] == "n":
            parameter["schema"]["maximum"] = limit
    for name in ("GenerateParams", "GenerateBody"):
        params = schema.get("components", {}).get("schemas", {}).get(name)
        if params is not None:
            params["properties"]["n"]["maximum"] = limit


def _require_files(operation: dict[str, Any], max_files: int) -> None:
    """/detect takes ``file`` or ``files``, not both (exactly one property), and ``files`` holds
    1 to ``max_files`` images (an empty array would send no part at all)."""
    body = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    body["minProperties"] = body["maxProperties"] = 1
    body["properties"]["files"] |= {"minItems": 1, "maxItems": max_files}
