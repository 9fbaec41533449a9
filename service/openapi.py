"""The one OpenAPI document of the public API, served at `/docs.json` and shown by the Swagger UI at `/`.

FastAPI's own spec route, moved to `/docs.json` (service/app.py), answers there before BentoML's route of that
name (BentoML mounts the app first); FastAPI's /docs, /redoc and /openapi.json are off. `document()` completes
FastAPI's document of the routes: each route's request body from the models it reads (service/http_input.py
`body`: JSON, and the multipart form where it takes files), each error status with the one `ErrorResponse`, what
BentoML serves outside the app (probes, /metrics), the API-key scheme, tags and summaries. The bento's `apis/openapi.yaml` (BentoML's generator) is not this document.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .schemas import FILES, ErrorResponse
from .scopes import Access, app_routes
from .scopes import document as document_scopes

RETRY_AFTER_HEADER = {"Retry-After": {"description": "seconds after which the request may be sent again",
                                      "schema": {"type": "integer"}}}
ERROR_DESCRIPTIONS = {
    400: "Bad request: the message names the field and the problem",
    401: "No API key, or a wrong one (ZEST_API_KEYS is set): send Authorization: Bearer <key>",
    404: "Not found: an unknown id, name, template set or model",
    409: "Conflict: the collection exists already, or holds another model's embeddings",
    413: "Over a size limit (bytes, images, texts, items, k): the message names the limit",
    415: "Unsupported content type: send application/json (or multipart/form-data where listed)",
    503: "A model service is down, restarting or still loading: retry after Retry-After seconds",
    507: "The write could not be stored (the data directory's disk is full or read-only): nothing was stored; "
         "reads still work, and the write may be sent again once there is space",
    "default": "Any other error (405 wrong method, 408 request sent too slowly, 500, 504): the same shape",
}


def form_schema(model: type[BaseModel]) -> dict:
    """The multipart form of a route's `form` model: its fields, `images` as file uploads (repeat the field for
    several), integers and numbers as such with their bounds, everything else as text (lists and objects as
    JSON, or as the field's description says)."""
    json_schema = model.model_json_schema(mode="validation")
    properties: dict[str, dict] = {}
    for name, prop in json_schema["properties"].items():
        if name == "images":
            binary = prop.get("items", {}).get("format") == "binary"
            properties[name] = prop if binary else {**FILES, "minItems": 1, **{
                k: prop[k] for k in ("minItems", "maxItems") if k in prop},
                "description": "image files (repeat the field for several)"}
            continue
        alternatives = [prop, *prop.get("anyOf", [])]
        types = {p.get("type") for p in alternatives}
        kind = "integer" if "integer" in types else "number" if "number" in types else "string"
        field: dict = {"type": kind}
        if kind != "string":
            field |= {k: v for p in alternatives for k, v in p.items() if k in ("minimum", "maximum")}
        if prop.get("description"):
            field["description"] = prop["description"]
        if prop.get("default") is not None:
            field["default"] = prop["default"]
        properties[name] = field
    return {"type": "object", "title": f"{model.__name__} (multipart)", "properties": properties,
            "required": list(json_schema.get("required", []))}


def request_body(model: type[BaseModel], form: type[BaseModel] | None) -> dict:
    """A route's requestBody from what it reads (service/http_input.py `body`): the multipart form first where
    it takes files, then the JSON model."""
    content = {} if form is None else {"multipart/form-data": {"schema": form_schema(form)}}
    content["application/json"] = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    return {"required": True, "content": content}


def body_readers(app: FastAPI) -> dict[tuple[str, str], tuple[type[BaseModel], type[BaseModel] | None]]:
    """(method, path) -> (JSON model, form model) of each route whose body is read by `http_input.body`."""
    out = {}
    for route in app_routes(app.routes):
        for dependency in getattr(getattr(route, "dependant", None), "dependencies", ()):
            read = getattr(dependency.call, "zest_body", None)
            if read is not None:
                out.update({(m, route.path_format): read for m in (getattr(route, "methods", None) or ())})
    return out


BODY_ERRORS = {400, 413, 415}
MODEL = {503}  # needs a model service
STORED = {507}  # writes to the store: refused whole when the disk cannot take them
ERRORS: dict[tuple[str, str], set] = {
    ("POST", "/classify"): BODY_ERRORS | {404} | MODEL,
    ("POST", "/embed/image"): BODY_ERRORS | MODEL,
    ("POST", "/embed/text"): BODY_ERRORS | MODEL,
    ("GET", "/templates"): set(),
    ("POST", "/items"): BODY_ERRORS | MODEL | STORED,
    ("GET", "/items/{item_id}"): {404} | MODEL,
    ("DELETE", "/items/{item_id}"): {404} | MODEL | STORED,
    ("POST", "/recommend"): BODY_ERRORS | {404} | MODEL,
    ("POST", "/collections"): BODY_ERRORS | {409} | MODEL | STORED,
    ("GET", "/collections"): MODEL,
    ("GET", "/collections/{name}"): {400, 404} | MODEL,
    ("DELETE", "/collections/{name}"): {400, 404} | MODEL | STORED,
    ("POST", "/collections/{name}/items"): BODY_ERRORS | {404, 409} | MODEL | STORED,
    ("POST", "/collections/{name}/search"): BODY_ERRORS | {404, 409} | MODEL,
    ("GET", "/collections/{name}/items/{item_id}"): {400, 404} | MODEL,
    ("DELETE", "/collections/{name}/items/{item_id}"): {400, 404} | MODEL | STORED,
    ("GET", "/collections/{name}/items/{item_id}/thumbnail"): {400, 404} | MODEL,
    ("GET", "/info"): set(),
    ("GET", "/ui"): set(),
    ("GET", "/ui/{file}"): {404},
    ("POST", "/v1/embeddings"): BODY_ERRORS | {404} | MODEL,
    ("GET", "/v1/models"): MODEL,
    ("GET", "/v1/models/{model}"): {404} | MODEL,
}
UNLISTED = {400, 404} | MODEL  # a route this table does not know yet: the statuses most routes can answer


# Swagger groups operations by tag: one per area of the API, found from the path (first match wins).
TAGS = [
    ("Classify", ("/classify", "/heads", "/templates"), "zero-shot and adapted-head image classification"),
    ("Embeddings", ("/embed/",), "L2-normalised CLIP image and text embeddings"),
    ("Collections", ("/collections",), "stored embeddings: add, search, get, delete"),
    ("Recommender", ("/items", "/recommend"), "the cold-start item catalogue and recommendations"),
    ("OpenAI-compatible", ("/v1/",), "OpenAI's embeddings API"),
    ("Playground", ("/ui",), "the browser page"),
    ("Server", ("/info", "/docs.json"), "what this server runs, and this document"),
    ("Infrastructure", ("/livez", "/healthz", "/readyz", "/metrics"), "probes and metrics, never behind a key"),
]
WORDS = {"Openai": "OpenAI", "Ui": "UI", "Api": "API"}  # FastAPI's summary is the function name, title-cased


def tag_of(path: str) -> str:
    return next((name for name, prefixes, _ in TAGS if path.startswith(prefixes)), "Server")


def summary_of(operation: dict) -> str:
    words = operation.get("summary", "").split()
    return " ".join([WORDS.get(words[0], words[0]), *(WORDS.get(w, w.lower()) for w in words[1:])]) if words else ""


def document(spec: dict, keys_on: bool, bodies: Mapping[tuple[str, str], dict]) -> None:
    """Complete FastAPI's document of the routes in place: request bodies, error responses, a tag
    per area and readable summaries."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            key = (method.upper(), path)
            operation.setdefault("tags", [tag_of(path)])
            operation["summary"] = summary_of(operation)
            if key in bodies:
                operation["requestBody"] = bodies[key]
            responses = {code: r for code, r in operation.get("responses", {}).items()
                         if code != "422" and not code.startswith(("4", "5"))}
            statuses = ERRORS.get(key, UNLISTED) | ({401} if keys_on and operation.get("security") != [] else set())
            for status in sorted(statuses):
                responses[str(status)] = _error_ref(status)
            responses["default"] = _error_ref("default")
            operation["responses"] = responses


def _error_ref(status: int | str) -> dict:
    out = {"description": ERROR_DESCRIPTIONS[status],
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    if status == 503:
        out["headers"] = RETRY_AFTER_HEADER
    return out


def infra_paths() -> dict:
    """BentoML's own endpoints on the public service (never behind an API key)."""
    text = {"content": {"text/plain": {"schema": {"type": "string"}}}}

    def probe(summary: str, description: str, with_503: bool = True) -> dict:
        responses: dict = {"200": {"description": "OK", **text}}
        if with_503:
            responses["503"] = _error_ref(503)
        responses["default"] = _error_ref("default")
        return {"get": {"tags": ["Infrastructure"], "summary": summary, "description": description,
                        "operationId": f"infra_{summary.split()[0].lower()}", "security": [],
                        "responses": responses}}

    return {
        "/livez": probe("Liveness probe", "503 once a model service that was up has stayed down for "
                                          "ZEST_LIVENESS_GRACE_S: restart the server"),
        "/healthz": probe("Healthz (= /livez)", "The same as /livez."),
        "/readyz": probe("Readiness probe", "200 while every model service answers; 503 while one is down, "
                                            "restarting or loading (answers within ZEST_PROBE_TIMEOUT_S)"),
        "/metrics": probe("Metrics (Prometheus)", "BentoML's request metrics and zest's own (zest_*)",
                          with_503=False),
    }


def spec(app: FastAPI, keys_on: bool) -> dict:
    """The whole document: the app's routes, completed; BentoML's endpoints; the API-key scheme if keys are on."""
    out = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes,
                      tags=[{"name": name, "description": text} for name, _, text in TAGS])
    schemas = out.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None), schemas.pop("ValidationError", None)  # the 422 zest never sends
    readers = body_readers(app)
    _, defs = models_json_schema([(m, "validation") for m in ({m for m, _ in readers.values()} | {ErrorResponse})],
                                 ref_template="#/components/schemas/{model}")
    for name, schema in defs["$defs"].items():
        schemas.setdefault(name, schema)
    document(out, keys_on, {key: request_body(*read) for key, read in readers.items()})
    out["paths"] = {**out["paths"], **infra_paths()}
    if keys_on:
        out["components"]["securitySchemes"] = {"bearerAuth": {
            "type": "http", "scheme": "bearer",
            "description": "one of the keys in ZEST_API_KEYS; the probes, /metrics and these docs need none"}}
        out["security"] = [{"bearerAuth": []}]
    return out


def allowed_methods(spec: dict, path: str) -> list[str]:
    """The methods the document lists for a concrete request path (for a 405's Allow header): routing
    reports only the first route that matched the path, and GET and POST of one path are two routes."""
    def regex(template: str, open_end: bool) -> str:
        parts = re.split(r"(\{[^}]+\})", template)
        return "".join((".+" if open_end and i == len(parts) - 2 else "[^/]+") if p.startswith("{") else re.escape(p)
                       for i, p in enumerate(parts))

    for open_end in (False, True):  # then {item_id:path}, which may hold a '/'
        for template, item in spec["paths"].items():
            if (not open_end or template.endswith("{item_id}")) and re.fullmatch(regex(template, open_end), path):
                return sorted(m.upper() for m in item)
    return []


def install(app: FastAPI, keys_on: bool, scopes: Mapping[str, Access] | None = None) -> None:
    """Make `app.openapi()` -- what FastAPI serves at its `openapi_url` -- this document (built once), each
    operation with the API-key scope it needs (service/scopes.py)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = spec(app, keys_on)
            if scopes is not None:
                document_scopes(app.openapi_schema, scopes, keys_on)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
