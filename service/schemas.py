"""Request and response schemas of the REST API (pydantic).

The request models are the routes' bodies (service/app.py, read by service/http_input.py) and the OpenAPI
document's (service/openapi.py): each constraint declared here is the one that is checked, and the one that
is documented. Limits that depend on settings (how many images, texts, characters) are checked where they are
used, with their 413 (models/limits.py).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, InstanceOf, WithJsonSchema, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from ..models.limits import COLLECTION_NAME_PATTERN, MAX_ID_CHARS, MAX_THRESHOLD, MIN_INPUTS, MIN_K, MIN_THRESHOLD

# The constraints of ids and names, for pydantic's Field and FastAPI's Path alike (service/app.py).
ITEM_ID: dict[str, Any] = {"min_length": 1, "max_length": MAX_ID_CHARS}
COLLECTION_NAME: dict[str, Any] = {"pattern": COLLECTION_NAME_PATTERN,
                                   "description": "1-63 letters, digits or '_', starting with a letter"}
ItemId = Annotated[str, Field(**ITEM_ID)]
NonBlank = Annotated[str, Field(min_length=1, pattern=r"\S")]
TopK = Annotated[int, Field(ge=MIN_K)]
FILES = {"type": "array", "items": {"type": "string", "format": "binary",
                                    "contentMediaType": "application/octet-stream"}}


class Upload:
    """An image file of a multipart request. JSON cannot make one: fields admit it as `InstanceOf`, and only
    the multipart reader (service/http_input.py) creates them (a plain class: no schema of its own)."""

    __slots__ = ("data", "name")

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self.data = name, data




def files(description: str, max_items: int | None = None) -> Any:
    """A multipart field of one or more image files (repeat the field for several)."""
    most = {} if max_items is None else {"maxItems": max_items}
    return Annotated[list[InstanceOf[Upload]], Field(min_length=1, max_length=max_items, description=description),
                     WithJsonSchema({**FILES, "minItems": 1, **most, "description": description})]


class ImageRef(BaseModel):
    """One image in a JSON request: base64 bytes, or a URL (fetched only from allow-listed hosts)."""

    model_config = ConfigDict(extra="forbid")
    base64: str | None = Field(None, description="the image file's bytes, base64-encoded")
    url: str | None = Field(None, description="http(s) URL; fetched only if its host is in ZEST_URL_ALLOWLIST")
    name: str | None = Field(None, description="echoed back in the response")


ImageIn = str | ImageRef | SkipJsonSchema[InstanceOf[Upload]]  # JSON: base64 or an object; multipart: a file


class ClassifyRequest(BaseModel):
    """JSON form of POST /classify (multipart uses the same field names, with image files)."""

    model_config = ConfigDict(extra="forbid")
    form_lists: ClassVar[tuple[str, ...]] = ("labels",)  # multipart: a comma-separated text field is a list
    images: list[ImageIn] = Field(..., description="base64 strings or image objects", min_length=MIN_INPUTS)
    labels: list[str] | None = Field(None, description="class names (required unless `head` is given); "
                                                        "multipart: comma-separated (cat,dog,car) or a JSON list")
    templates: str | list[str] | None = Field(
        None, description="a shipped template set name (GET /templates), or a list of templates with one {} each "
                          "(multipart: a JSON list)")
    top_k: TopK | None = Field(None, description="labels returned per image (default 5; with `threshold`, every "
                                                 "label that clears it)")
    head: str | None = Field(None, description="classify with this adapted head (GET /heads) instead of zero-shot: "
                                              "its classes are the labels; labels and templates are not given")
    threshold: float | None = Field(
        None, description=f"return only labels whose probability is at least this ({MIN_THRESHOLD} to "
                          f"{MAX_THRESHOLD}): 'none of these' when no label clears it. Only for models whose scoring "
                          "is sigmoid (SigLIP): their probabilities are per label. A softmax model answers 400",
        ge=MIN_THRESHOLD, le=MAX_THRESHOLD)


class EmbedImageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[ImageIn] = Field(..., description="base64 strings or image objects", min_length=MIN_INPUTS)


class EmbedTextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(..., min_length=MIN_INPUTS)


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
    scoring: Literal["softmax", "sigmoid"] = Field(
        ..., description="how the probabilities were made: `softmax` over the labels given (they sum to 1; CLIP "
                         "families, and adapted heads), or `sigmoid`: each label's own probability, "
                         "sigmoid(logit_scale * similarity + logit_bias), independent of the other labels (SigLIP "
                         "families, whose models carry a logit_bias)")
    templates: TemplatesUsed | None = Field(None, description="the templates used (null with a head)")
    head: str | None = Field(None, description="the adapted head used, if any")
    threshold: float | None = Field(None, description="the threshold applied, if any")
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


class InfoResponse(BaseModel):
    """GET /info: what this server runs, for a person (the playground's Status tab) or a script."""

    version: str
    model: str | None = Field(..., description="the CLIP model; null while the encoder service is not up")
    dim: int | None = Field(..., description="its embedding dimension")
    runtime: str | None = Field(..., description="what runs it: torch, onnx, onnx-int8, openvino, int8 "
                                                  "or bf16 (ZEST_RUNTIME; with auto, its choice)")
    device: str | None = Field(..., description="where it runs: cpu, cuda, ...")
    scoring: str | None = Field(None, description="how /classify turns similarities into probabilities: softmax "
                                                  "over the labels, or sigmoid per label (SigLIP-family models)")
    heads: list[str] = Field(..., description="adapted heads loaded (GET /heads has their details)")
    template_sets: list[str] = Field(..., description="shipped prompt template sets (GET /templates)")
    services: dict[str, bool] = Field(..., description="model service name -> answers its readiness probe now")
    recommender: bool = Field(..., description="a recommender model is configured (/items, /recommend)")


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
    id: ItemId
    text: NonBlank = Field(..., description="the item's description (not blank)")


class ItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ItemIn] = Field(..., min_length=1)


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    history: list[ItemId] = Field(default_factory=list, description="item ids the user interacted with, oldest first")
    history_texts: list[NonBlank] = Field(default_factory=list,
                                     description="free-text descriptions of liked items (treated as most recent)")
    k: TopK = Field(10, description="number of items to return")
    exclude_history: bool = Field(True, description="leave the history's items out of the results")
    candidates: list[ItemId] | None = Field(None, description="rank only these item ids", min_length=1)


# -- collections ------------------------------------------------------------------------------
class CollectionCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., **COLLECTION_NAME)
    model: str | None = Field(None, description="optional: refused (409) unless it is the model this server runs")
    thumbnails: bool = Field(False, description="keep a small JPEG (<= 256 px, <= 16 kB) of each image item, served "
                                                "by GET /collections/{name}/items/{id}/thumbnail")


class CollectionItemIn(BaseModel):
    """One item: exactly one of `text` or `image` (base64 string or image object)."""

    model_config = ConfigDict(extra="forbid")
    id: ItemId
    text: NonBlank | None = None
    image: str | ImageRef | None = None
    metadata: dict | None = Field(None, description="JSON object stored with the item; searchable with `filter`")


class CollectionItemsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[CollectionItemIn] = Field(..., min_length=1)


class CollectionSearchRequest(BaseModel):
    """Search by exactly one of `text`, `image`, `vector` (a CLIP embedding of the collection's model) or `like`
    (an item id)."""

    model_config = ConfigDict(extra="forbid")
    text: NonBlank | None = None
    image: str | ImageRef | None = None
    vector: list[float] | None = None
    like: ItemId | None = Field(None, description="an item id of this collection: the items nearest to it (\"more like "
                                               "this\"), itself left out")
    k: TopK = Field(10, description="results returned")
    filter: dict | None = Field(None, description='metadata equality: {"field": value or [values]}')


class CollectionItemsForm(BaseModel):
    """The multipart form of POST /collections/{name}/items: one image item per file."""

    model_config = ConfigDict(extra="forbid")
    images: files("image files (repeat the field for several)")  # type: ignore[valid-type]
    ids: list[ItemId] | None = Field(None, description="a JSON list with one id per file (default: the file names)")
    metadata: dict | list[dict] | None = Field(
        None, description="a JSON object for every file, or a JSON list with one object per file")

    @model_validator(mode="after")
    def _one_per_file(self) -> CollectionItemsForm:
        n = len(self.images)
        if self.ids is not None and len(self.ids) != n:
            raise ValueError(f"ids must be a JSON list with one id per image ({n})")
        if isinstance(self.metadata, list) and len(self.metadata) != n:
            raise ValueError(f"metadata must be one JSON object, or a list with one per image ({n})")
        return self


class CollectionSearchForm(BaseModel):
    """The multipart form of POST /collections/{name}/search: the one image to search by."""

    model_config = ConfigDict(extra="forbid")
    images: files("the one image to search by", max_items=1)  # type: ignore[valid-type]
    k: TopK = Field(10, description="results returned")
    filter: dict | None = Field(None, description='a JSON object: metadata equality, {"field": value or [values]}')


class CollectionInfoResponse(BaseModel):
    name: str
    model: str | None
    dim: int
    count: int
    created_at: float
    thumbnails: bool = Field(False, description="image items keep a thumbnail (set at creation)")


class CollectionsResponse(BaseModel):
    collections: list[CollectionInfoResponse]


class CollectionHit(BaseModel):
    id: str
    score: float | None = None
    kind: str | None = None
    text: str | None = None
    name: str | None = None
    metadata: dict = Field(default_factory=dict)
    thumbnail: bool = Field(False, description="GET /collections/{name}/items/{id}/thumbnail serves its JPEG")


class CollectionSearchResponse(BaseModel):
    collection: str
    model: str
    results: list[CollectionHit]


# -- errors -----------------------------------------------------------------------------------
class ErrorResponse(BaseModel):
    """Every error zest answers, whatever the status: 4xx for the request, 5xx for the server."""

    error: str = Field(..., description="what went wrong, and for a 4xx what to send instead")


# -- recommender responses -------------------------------------------------------------------
class ItemsResponse(BaseModel):
    created: int = Field(..., description="ids that were new")
    updated: int = Field(..., description="ids that existed and were replaced")
    total: int = Field(..., description="items in the catalogue now")


class ItemResponse(BaseModel):
    id: str
    text: str
    updated_at: float = Field(..., description="Unix time of the last write")


class ItemDeletedResponse(BaseModel):
    deleted: str
    total: int


class RecommendedItem(BaseModel):
    id: str
    score: float


class RecommendResponse(BaseModel):
    model: str
    items: list[RecommendedItem]


# -- collections responses -------------------------------------------------------------------
class CollectionDroppedResponse(BaseModel):
    deleted: str


class CollectionItemsResponse(BaseModel):
    collection: str
    upserted: int
    count: int


class CollectionItemDeletedResponse(BaseModel):
    deleted: str
    count: int


# -- OpenAI-compatible embeddings (service/openai_api.py) ---------------------------------------
class OpenAIEmbeddingsRequest(BaseModel):
    """POST /v1/embeddings, as OpenAI's API takes it; `modality` as Infinity's does."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(..., description="the served model (GET /v1/models)")
    input: str | list[str] = Field(
        ..., description="a string or a list of strings: texts, or with modality=image data URIs "
                         "(data:image/png;base64,...), base64 image bytes, or http(s) URLs of allow-listed hosts. "
                         "Token arrays are refused (send text)")
    modality: Literal["text", "image"] = Field("text", description="what `input` holds (Infinity's extension)")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: JSON numbers; base64: the little-endian float32 bytes, base64-encoded")
    dimensions: int | None = Field(None, description="only the model's own dimension is accepted: CLIP embeddings "
                                                     "cannot be shortened")
    user: str | None = Field(None, description="accepted and ignored")

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        first = value[0] if isinstance(value, list) and value else None
        if (isinstance(first, int) and not isinstance(first, bool)) or (
                isinstance(first, list) and first and isinstance(first[0], int)):
            raise ValueError("token arrays are not supported, send the text itself (zest tokenizes with the model's "
                             "own tokenizer); LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False)")
        if value == []:
            raise ValueError("input is empty: send a string or a non-empty list of strings")
        return value


class OpenAIEmbedding(BaseModel):
    object: str = "embedding"
    index: int
    embedding: list[float] | str = Field(..., description="floats, or base64 with encoding_format=base64")


class OpenAIUsage(BaseModel):
    prompt_tokens: int = Field(..., description="tokens the text tower read (its tokenizer, after truncation to its "
                                                "context, start/end tokens included); images count 0")
    total_tokens: int


class OpenAIEmbeddingsResponse(BaseModel):
    object: str = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class OpenAIModel(BaseModel):
    id: str
    object: str = "model"
    created: int = Field(..., description="Unix time this server started serving it")
    owned_by: str = "zest"


class OpenAIModelsResponse(BaseModel):
    object: str = "list"
    data: list[OpenAIModel]
