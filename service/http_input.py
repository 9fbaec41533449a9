"""Read a request body into its route's pydantic model (service/schemas.py: the one declaration of its fields and
constraints, which service/openapi.py documents): JSON, or a multipart form where the route takes image files.

What pydantic cannot see is here: the body-size limit (413 on the declared length before reading, and on what is
read), the content type (415), a file's byte limit, and how a form's text fields carry lists. A model's errors are
FastAPI's `RequestValidationError`: a 400 naming the field (service/errors.py).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..models.errors import InvalidInput
from ..models.limits import check_at_most
from .collections import NewItem
from .errors import RequestTimeout, UnsupportedMediaType
from .pipeline import RawImage
from .schemas import (
    CollectionItemsForm,
    CollectionItemsRequest,
    CollectionSearchForm,
    CollectionSearchRequest,
    ImageRef,
    Upload,
)
from .settings import Settings

MULTIPART = "multipart/form-data"
M = TypeVar("M", bound=BaseModel)


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


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def check_json_type(request: Request, multipart_too: bool = False) -> None:
    """415 unless the body is declared JSON (`application/json`, `application/*+json`) or not declared at all
    (a body with no content-type is read as JSON); `multipart_too`: the endpoint also reads multipart."""
    kind = media_type(request)
    if kind and kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
        accepted = "application/json or multipart/form-data" if multipart_too else "application/json"
        raise UnsupportedMediaType(f"content-type {kind!r} is not accepted here: send {accepted}")


def _validated(model: type[M], validate: Callable[[], M]) -> M:
    try:
        return validate()
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise InvalidInput(f"request body is not valid JSON ({errors[0]['msg']})") from None
        raise RequestValidationError(errors) from None


async def read_json(request: Request, settings: Settings, model: type[M], multipart_too: bool = False) -> M:
    """The JSON body, read within the size limit, as `model` (strict: the JSON types the schema states)."""
    check_json_type(request, multipart_too)
    limit = check_declared_length(request, settings)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        check_at_most(len(body), limit, "request body", "bytes")
    return _validated(model, lambda: model.model_validate_json(bytes(body) or b"null", strict=True))


def _form_value(model: type[BaseModel], key: str, value: str) -> Any:
    """A form's text field: JSON if it starts with '[' or '{' (a list, an object); a comma-separated list for
    the model's `form_lists`; otherwise the text, which pydantic reads as the field's type ("5" as 5)."""
    text = value.strip()
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"field {key!r} is not valid JSON ({exc})") from None
    if key in getattr(model, "form_lists", ()):
        return text.split(",")
    return value


async def read_form(request: Request, settings: Settings, model: type[M]) -> M:
    """A multipart body as `model`: files under `images` (repeatable, each read up to the byte limit + 1, which
    the pipeline refuses), the other fields as text."""
    check_declared_length(request, settings)
    try:
        form = await request.form(max_files=settings.max_images + 1, max_fields=64, max_part_size=1024 * 1024)
    except RequestTimeout:  # the client stopped sending (service/http_limits.py): 408, not a bad form
        raise
    except Exception as exc:  # noqa: BLE001 - starlette raises its own HTTPException/MultiPartException on bad forms
        raise InvalidInput(f"malformed multipart body: {getattr(exc, 'detail', exc)}") from None
    files: list[Upload] = []
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != "images":
                raise InvalidInput(f"unexpected file field {key!r}; image files go in 'images'")
            files.append(Upload(value.filename or f"image[{len(files)}]", await value.read(settings.max_image_bytes + 1)))
        elif key == "images":
            raise InvalidInput("'images' must be file uploads in a multipart request")
        else:
            fields[key] = _form_value(model, key, value)
    return _validated(model, lambda: model.model_validate({**fields, "images": files}))


BodyReader = Callable[[Request], Awaitable[Any]]


def body(settings: Settings, model: type[BaseModel], form: type[BaseModel] | None = None) -> BodyReader:
    """A FastAPI dependency: the body as `model` (JSON), or as `form` from a multipart body (`form` may be `model`
    itself). service/openapi.py documents the route's request body from `zest_body`."""

    async def read(request: Request) -> BaseModel:
        if form is not None and media_type(request) == MULTIPART:
            return await read_form(request, settings, form)
        return await read_json(request, settings, model, multipart_too=form is not None)

    read.zest_body = (model, form)  # type: ignore[attr-defined]
    return read


# -- into the pipeline's and the collections' inputs ---------------------------------------------------------
def raw_images(images: Sequence[str | ImageRef | Upload], names: Sequence[str] | None = None) -> list[RawImage]:
    """Uploaded files, base64 strings or image objects -> RawImage (decoded and checked by the pipeline)."""
    raw = []
    for i, item in enumerate(images):
        if isinstance(item, Upload):
            raw.append(RawImage(name=item.name, data=item.data))
            continue
        ref = ImageRef(base64=item) if isinstance(item, str) else item
        name = ref.name or (names[i] if names else f"image[{i}]")
        if (ref.base64 is None) == (ref.url is None):
            raise InvalidInput(f"{name}: give exactly one of 'base64' or 'url'")
        if ref.url is not None:
            raw.append(RawImage(name=name, url=ref.url))
            continue
        data = ref.base64 or ""
        if data.startswith("data:") and "," in data:  # data URLs from browsers
            data = data.split(",", 1)[1]
        try:
            raw.append(RawImage(name=name, data=base64.b64decode(data, validate=True)))
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{name}: not valid base64") from None
    return raw


def collection_items(body: CollectionItemsRequest | CollectionItemsForm) -> list[NewItem]:
    """The items of POST /collections/{name}/items: one per file (ids default to the file names), or JSON's."""
    if isinstance(body, CollectionItemsForm):
        raw = raw_images(body.images)
        ids = body.ids if body.ids is not None else [r.name for r in raw]
        meta = body.metadata if isinstance(body.metadata, list) else [body.metadata or {}] * len(raw)
        return [NewItem(id=i, image=r, metadata=m) for i, r, m in zip(ids, raw, meta)]
    return [NewItem(id=it.id, text=it.text, metadata=it.metadata,
                    image=raw_images([it.image], [f"items[{n}].image"])[0] if it.image is not None else None)
            for n, it in enumerate(body.items)]


def collection_query(body: CollectionSearchRequest | CollectionSearchForm) -> dict[str, Any]:
    """The query of POST /collections/{name}/search, as `Collections.search` keywords."""
    if isinstance(body, CollectionSearchForm):
        return {"image": raw_images(body.images)[0], "k": body.k, "filter": body.filter}
    image = raw_images([body.image])[0] if body.image is not None else None
    return {"text": body.text, "image": image, "vector": body.vector, "k": body.k, "filter": body.filter,
            "like": body.like}
