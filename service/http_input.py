"""Parse HTTP bodies (JSON or multipart) into the pipeline's and the collections' inputs. Bad bodies raise
`InvalidInput`."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..models.errors import InvalidInput
from ..models.limits import check_at_most
from .collections import NewItem
from .errors import RequestTimeout, UnsupportedMediaType
from .pipeline import RawImage
from .schemas import CollectionItemsRequest, CollectionSearchRequest, ImageRef
from .settings import Settings

MULTIPART = "multipart/form-data"


def max_body_bytes(settings: Settings) -> int:
    """Largest request body accepted: every image at its limit, base64-inflated, plus room for fields."""
    return int(settings.max_images * settings.max_image_bytes * 4 / 3) + 8 * 1024 * 1024


def check_declared_length(request: Request, settings: Settings) -> int:
    """413 on the declared length alone, before reading a byte; returns the limit for what is then read."""
    limit = max_body_bytes(settings)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        check_at_most(int(declared), limit, f"request body of {declared} bytes", "bytes")
    return limit


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "invalid request: " + "; ".join(parts)


def parse_model(model: type[BaseModel], data: Any) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(_validation_message(exc)) from None


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def check_json_type(request: Request, multipart_too: bool = False) -> None:
    """415 unless the body is declared JSON (`application/json`, `application/*+json`) or not declared at all
    (a body with no content-type is read as JSON); `multipart_too`: the endpoint also reads multipart."""
    kind = media_type(request)
    if kind and kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
        accepted = "application/json or multipart/form-data" if multipart_too else "application/json"
        raise UnsupportedMediaType(f"content-type {kind!r} is not accepted here: send {accepted}")


async def read_json(request: Request, settings: Settings, multipart_too: bool = False) -> Any:
    check_json_type(request, multipart_too)
    limit = check_declared_length(request, settings)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        check_at_most(len(body), limit, "request body", "bytes")
    try:
        return json.loads(body or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"request body is not valid JSON ({exc})") from None


def json_images(images: list[str | ImageRef]) -> list[RawImage]:
    raw = []
    for i, item in enumerate(images):
        ref = ImageRef(base64=item) if isinstance(item, str) else item
        name = ref.name or f"image[{i}]"
        if (ref.base64 is None) == (ref.url is None):
            raise InvalidInput(f"{name}: give exactly one of 'base64' or 'url'")
        if ref.url is not None:
            raw.append(RawImage(name=name, url=ref.url))
            continue
        data = ref.base64
        if data.startswith("data:") and "," in data:  # data URLs from browsers
            data = data.split(",", 1)[1]
        try:
            raw.append(RawImage(name=name, data=base64.b64decode(data, validate=True)))
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{name}: not valid base64") from None
    return raw


def _form_field(key: str, value: Any) -> Any:
    """A multipart text field. `labels`/`templates`: a JSON list if it starts with '[', else text
    (labels comma-separated, templates a set name); `top_k`: an integer; `threshold`: a number."""
    if not isinstance(value, str):
        raise InvalidInput(f"field {key!r} must be text, got a file")
    text = value.strip()
    if key in ("labels", "templates", "texts") and text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"field {key!r} is not a valid JSON list ({exc})") from None
    if key == "labels":
        return text.split(",")
    if key == "top_k":
        try:
            return int(text)
        except ValueError:
            raise InvalidInput("top_k must be an integer >= 1") from None
    if key == "threshold":
        try:
            return float(text)
        except ValueError:
            raise InvalidInput("threshold must be a number between 0 and 1") from None
    return value


async def read_multipart(request: Request, settings: Settings) -> tuple[list[RawImage], dict[str, Any]]:
    """Files under `images` (repeatable); other fields as text (`labels` may be JSON or comma-separated)."""
    check_declared_length(request, settings)
    try:
        form = await request.form(max_files=settings.max_images + 1, max_fields=64, max_part_size=1024 * 1024)
    except RequestTimeout:  # the client stopped sending (service/http_limits.py): 408, not a bad form
        raise
    except Exception as exc:  # noqa: BLE001 - starlette raises its own HTTPException/MultiPartException on bad forms
        raise InvalidInput(f"malformed multipart body: {getattr(exc, 'detail', exc)}") from None
    raw: list[RawImage] = []
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key == "images":
            if not isinstance(value, UploadFile):
                raise InvalidInput("'images' must be file uploads in a multipart request")
            data = await value.read(settings.max_image_bytes + 1)
            raw.append(RawImage(name=value.filename or f"image[{len(raw)}]", data=data))
        elif isinstance(value, UploadFile):
            raise InvalidInput(f"unexpected file field {key!r}; image files go in 'images'")
        else:
            fields[key] = _form_field(key, value)
    return raw, fields


async def read_images_and_fields(request: Request, settings: Settings, model: type[BaseModel]
                                 ) -> tuple[list[RawImage], BaseModel | dict[str, Any]]:
    """(images, the other fields) from a multipart or a JSON body."""
    if media_type(request) == MULTIPART:
        return await read_multipart(request, settings)
    parsed = parse_model(model, await read_json(request, settings, multipart_too=True))
    return json_images(parsed.images), parsed


def only_fields(fields: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    """`fields` (a multipart form's text fields), or InvalidInput naming the unknown ones."""
    unknown = set(fields) - allowed
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))}; expected: {', '.join(sorted(allowed))}")
    return fields


# -- collections: image/text search over stored CLIP embeddings (service/collections.py) ----------------------
def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip() == MULTIPART


def json_field(fields: dict[str, Any], key: str, default: Any = None) -> Any:
    """A multipart text field holding JSON (ids, metadata, filter)."""
    if key not in fields:
        return default
    try:
        return json.loads(fields[key])
    except (TypeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"field {key!r} is not valid JSON ({exc})") from None


def _multipart_collection_items(raw: list[RawImage], fields: dict[str, Any]) -> list[NewItem]:
    """Multipart: files in `images`; optional `ids` (JSON list, default the file names) and `metadata`
    (a JSON object for every file, or a JSON list with one object per file)."""
    only_fields(fields, {"ids", "metadata"})
    ids = json_field(fields, "ids", [r.name for r in raw])
    metadata = json_field(fields, "metadata", {})
    if not isinstance(ids, list) or len(ids) != len(raw):
        raise InvalidInput(f"ids must be a JSON list with one id per image ({len(raw)})")
    if isinstance(metadata, list):
        if len(metadata) != len(raw):
            raise InvalidInput(f"metadata must be one JSON object, or a list with one per image ({len(raw)})")
    else:
        metadata = [metadata] * len(raw)
    return [NewItem(id=i, image=r, metadata=m) for i, r, m in zip(ids, raw, metadata)]


async def read_collection_items(request: Request, settings: Settings) -> list[NewItem]:
    """The items of POST /collections/{name}/items: multipart `images` files (+ `ids`, `metadata`), or JSON
    {"items": [{"id", "text" | "image", "metadata"}]}."""
    if _is_multipart(request):
        return _multipart_collection_items(*await read_multipart(request, settings))
    body = parse_model(CollectionItemsRequest, await read_json(request, settings, multipart_too=True))
    items = []
    for n, it in enumerate(body.items):
        image = json_images([it.image])[0] if it.image is not None else None
        if image is not None and image.name == "image[0]":
            image.name = f"items[{n}].image"
        items.append(NewItem(id=it.id, text=it.text, image=image, metadata=it.metadata))
    return items


async def read_collection_search(request: Request, settings: Settings) -> dict[str, Any]:
    """The query of POST /collections/{name}/search, as `Collections.search` keywords: JSON {"text" | "image" |
    "vector", "k", "filter"}, or multipart with one file in `images` (+ `k`, `filter`)."""
    if _is_multipart(request):
        raw, fields = await read_multipart(request, settings)
        only_fields(fields, {"k", "filter"})
        if len(raw) != 1:
            raise InvalidInput("send exactly one image file in 'images' to search by")
        return {"image": raw[0], "k": json_field(fields, "k", 10), "filter": json_field(fields, "filter")}
    body = parse_model(CollectionSearchRequest, await read_json(request, settings, multipart_too=True))
    image = json_images([body.image])[0] if body.image is not None else None
    return {"text": body.text, "image": image, "vector": body.vector, "k": body.k, "filter": body.filter,
            "like": body.like}
