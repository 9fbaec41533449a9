"""Request and response schemas of the REST API (pydantic)."""

from __future__ import annotations

from typing import Union

from pydantic import BaseModel, ConfigDict, Field


class ImageRef(BaseModel):
    """One image in a JSON request: base64 bytes, or a URL (fetched only from allow-listed hosts)."""

    model_config = ConfigDict(extra="forbid")
    base64: str | None = Field(None, description="the image file's bytes, base64-encoded")
    url: str | None = Field(None, description="http(s) URL; fetched only if its host is in ZEST_URL_ALLOWLIST")
    name: str | None = Field(None, description="echoed back in the response")


class ClassifyRequest(BaseModel):
    """JSON form of POST /classify (multipart uses the same field names, with image files)."""

    model_config = ConfigDict(extra="forbid")
    images: list[Union[str, ImageRef]] = Field(..., description="base64 strings or image objects")
    labels: list[str] | None = Field(None, description="class names (required unless `head` is given)")
    templates: Union[str, list[str], None] = Field(
        None, description="a shipped template set name, or a list of templates with one {} each")
    top_k: int = Field(5, description="labels returned per image")
    head: str | None = Field(None, description="classify with this adapted head (GET /heads) instead of zero-shot: "
                                              "its classes are the labels; labels and templates are not given")


class EmbedImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[Union[str, ImageRef]]


class EmbedTextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str]


class Prediction(BaseModel):
    label: str
    probability: float


class ImageResult(BaseModel):
    image: str
    predictions: list[Prediction]


class TemplatesUsed(BaseModel):
    name: str
    count: int


class ClassifyResponse(BaseModel):
    model: str
    templates: TemplatesUsed | None = Field(None, description="the templates used (null with a head)")
    head: str | None = Field(None, description="the adapted head used, if any")
    results: list[ImageResult]


class HeadInfo(BaseModel):
    name: str = Field(..., description="what `head` in POST /classify names")
    source: str = Field(..., description="BentoML model tag or directory it was loaded from")
    model_id: str = Field(..., description="the model it was made for")
    usable: bool = Field(..., description="false when made for another model than the one served (409 on use)")
    method: str
    classes: list[str]
    metrics: dict = Field(..., description="held-out accuracy measured by `zest adapt`: zero_shot_top1, "
                                           "adapted_top1, heldout_images, ...")
    created: str | None = None
    cache_size: int = Field(..., description="training-image features in the head's cache (Tip-Adapter)")


class HeadsResponse(BaseModel):
    model: str = Field(..., description="the model this server runs")
    heads: list[HeadInfo]


class EmbedResponse(BaseModel):
    model: str
    dim: int
    embeddings: list[list[float]]


class TemplateSetInfo(BaseModel):
    name: str
    description: str
    templates: list[str]


class TemplatesResponse(BaseModel):
    template_sets: list[TemplateSetInfo]


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    text: str


class ItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ItemIn]


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    history: list[str] = Field(default_factory=list, description="item ids the user interacted with, oldest first")
    history_texts: list[str] = Field(default_factory=list,
                                     description="free-text descriptions of liked items (treated as most recent)")
    k: int = Field(10, description="number of items to return")
    exclude_history: bool = Field(True, description="leave the history's items out of the results")
    candidates: list[str] | None = Field(None, description="rank only these item ids")


# -- collections ------------------------------------------------------------------------------
class CollectionCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., description="1-63 letters, digits or '_', starting with a letter")
    model: str | None = Field(None, description="optional: refused (409) unless it is the model this server runs")


class CollectionItemIn(BaseModel):
    """One item: exactly one of `text` or `image` (base64 string or image object)."""

    model_config = ConfigDict(extra="forbid")
    id: str
    text: str | None = None
    image: Union[str, ImageRef, None] = None
    metadata: dict | None = Field(None, description="JSON object stored with the item; searchable with `filter`")


class CollectionItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[CollectionItemIn]


class CollectionSearchRequest(BaseModel):
    """Search by exactly one of `text`, `image` or `vector` (a CLIP embedding of the collection's model)."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    image: Union[str, ImageRef, None] = None
    vector: list[float] | None = None
    k: int = Field(10, description="results returned")
    filter: dict | None = Field(None, description='metadata equality: {"field": value or [values]}')


class CollectionInfoResponse(BaseModel):
    name: str
    model: str | None
    dim: int
    count: int
    created_at: float


class CollectionsResponse(BaseModel):
    collections: list[CollectionInfoResponse]


class CollectionHit(BaseModel):
    id: str
    score: float | None = None
    kind: str | None = None
    text: str | None = None
    name: str | None = None
    metadata: dict = Field(default_factory=dict)


class CollectionSearchResponse(BaseModel):
    collection: str
    model: str
    results: list[CollectionHit]
