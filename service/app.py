"""The bento's target, `zest.service.app:Zest`: the public REST API, thin HTTP glue over `ClipPipeline`
(service/pipeline.py), `Collections` (service/collections.py) and the two model services.

Three services run in one bento:
- `ClipEncoderService` (service/encoder_service.py) holds the model; concurrent calls are merged into one
  forward pass by zest's `GreedyBatcher` (service/batching.py).
- `RecommenderService` (service/recommender_service.py) holds the ZESRec model and the persistent item
  catalogue (request logic: service/recommender.py). It runs as a single worker so the catalogue has one writer.
- `Zest`, here, is the public API. It decodes, validates and preprocesses requests (service/http_input.py),
  keeps the class-embedding cache and the adapted heads (service/served_heads.py), and calls the other two through
  `bentoml.depends`.

What all three read once per process (settings, API keys, the model services' options): service/process.py.
How the services call each other, retry and report health: service/transport.py. Exceptions to responses,
and user errors across the service boundary: service/errors.py. Size limits: models/limits.py. Time limits on
clients: service/http_limits.py. SIGTERM, and a model that cannot load: service/lifecycle.py. API keys:
service/auth.py (each route's scope: ROUTE_SCOPES below, service/scopes.py). The OpenAPI document (/docs.json,
Swagger at /): service/openapi.py. The OpenAI-compatible /v1 endpoints: service/openai_api.py. The playground at
/ui: service/playground.py (GET /info: service/server_info.py).
Serve: `bentoml serve zest.service.app:Zest` (settings: service/settings.py).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import anyio
import bentoml
from fastapi import Depends, FastAPI, Path, Request, Response

from .. import __version__
from ..models.errors import Unavailable
from . import errors, openai_api, openapi, playground, scopes
from .auth import ApiKeyMiddleware
from .bento_image import bento_image
from .compat import install_header_timeout, release_request_timers
from .encoder_service import ClipEncoderService
from .http_input import body, collection_items, collection_query, raw_images
from .http_limits import BodyTimeoutMiddleware
from .keyfile import Scope
from .lifecycle import install_drain
from .pipeline import ClipPipeline, EncoderInfo
from .process import API_KEYS, PUBLIC_SERVICE, SETTINGS, log
from .recommender import NO_MODEL, has_model
from .recommender_service import RecommenderService
from .schemas import (
    COLLECTION_NAME,
    ITEM_ID,
    ClassifyRequest,
    ClassifyResponse,
    CollectionCreateRequest,
    CollectionDroppedResponse,
    CollectionHit,
    CollectionInfoResponse,
    CollectionItemDeletedResponse,
    CollectionItemsForm,
    CollectionItemsRequest,
    CollectionItemsResponse,
    CollectionSearchForm,
    CollectionSearchRequest,
    CollectionSearchResponse,
    CollectionsResponse,
    EmbedImageRequest,
    EmbedResponse,
    EmbedTextRequest,
    HeadsResponse,
    InfoResponse,
    ItemDeletedResponse,
    ItemResponse,
    ItemsRequest,
    ItemsResponse,
    OpenAIEmbeddingsRequest,
    OpenAIEmbeddingsResponse,
    OpenAIModel,
    OpenAIModelsResponse,
    RecommendRequest,
    RecommendResponse,
    TemplateSetInfo,
    TemplatesResponse,
)
from .scopes import PUBLIC, READ, WRITE, Access
from .served_heads import declare_heads, load_served_heads
from .server_info import server_info
from .transport import Dependencies, Dependency

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .collections import Collections

release_request_timers()  # every service's worker: BentoML's request timeout kept each request for 300 s


# The one spec is FastAPI's, at BentoML's /docs.json (its Swagger UI at / reads it): service/openapi.py.
app = FastAPI(title="zest", version=__version__, openapi_url="/docs.json", docs_url=None, redoc_url=None,
              description="Zero-shot image classification, CLIP embeddings (also OpenAI-compatible, /v1), "
                          "collections of stored embeddings and cold-start recommendations. Every error is "
                          '`{"error": "..."}`.')


errors.register(app)
app.add_middleware(BodyTimeoutMiddleware, read_timeout_s=SETTINGS.body_read_timeout_s,
                   total_timeout_s=SETTINGS.body_timeout_s)
INFO_DEADLINE_S = 10.0  # the encoder's `info` is instant when it is up: a longer wait means it is not


async def _json_response(build: Callable[[], BaseModel]) -> Response:
    """`build()`, a route's pydantic result, and its JSON by pydantic's own encoder, in one worker-thread hop.
    FastAPI's response_model path (validate again, to Python, json.dumps) costs ~25x more: 48 ms for 32
    embeddings of 512 floats against 1.8 ms. The route's response_model still states the schema."""
    body = await anyio.to_thread.run_sync(lambda: build().model_dump_json().encode())
    return Response(body, media_type="application/json")

# Each route's body: its one pydantic model, read from JSON or (with files) multipart (service/http_input.py).
Classify = Annotated[ClassifyRequest, Depends(body(SETTINGS, ClassifyRequest, form=ClassifyRequest))]
EmbedImage = Annotated[EmbedImageRequest, Depends(body(SETTINGS, EmbedImageRequest, form=EmbedImageRequest))]
EmbedText = Annotated[EmbedTextRequest, Depends(body(SETTINGS, EmbedTextRequest))]
Items = Annotated[ItemsRequest, Depends(body(SETTINGS, ItemsRequest))]
Recommend = Annotated[RecommendRequest, Depends(body(SETTINGS, RecommendRequest))]
CollectionCreate = Annotated[CollectionCreateRequest, Depends(body(SETTINGS, CollectionCreateRequest))]
CollectionItems = Annotated[CollectionItemsRequest | CollectionItemsForm,
                            Depends(body(SETTINGS, CollectionItemsRequest, form=CollectionItemsForm))]
CollectionSearch = Annotated[CollectionSearchRequest | CollectionSearchForm,
                             Depends(body(SETTINGS, CollectionSearchRequest, form=CollectionSearchForm))]
OpenAIEmbeddings = Annotated[OpenAIEmbeddingsRequest, Depends(body(SETTINGS, OpenAIEmbeddingsRequest))]
# path parameters, with the schemas' constraints
Name = Annotated[str, Path(**COLLECTION_NAME)]
ItemId = Annotated[str, Path(**ITEM_ID)]
ModelId = Annotated[str, Path(min_length=1)]


# runner_probe off: BentoML's own dependency check in /readyz waits up to 5 s per service and answers 500
# when one refuses connections; `Zest.__is_ready__` checks them instead, within ZEST_PROBE_TIMEOUT_S.
@bentoml.service(name=PUBLIC_SERVICE, image=bento_image(), traffic={"timeout": SETTINGS.timeout_s},
                 runner_probe={"enabled": False, "timeout": 1, "period": 10})
@bentoml.asgi_app(app, path="/")
@declare_heads(SETTINGS.heads)
class Zest:
    """The public REST API."""

    # BentoML's proxies to the model services; the app calls them through `self.encoder` / `self.recommender`
    encoder_proxy = bentoml.depends(ClipEncoderService)
    recommender_proxy = bentoml.depends(RecommenderService)

    def __init__(self) -> None:
        s = self.settings = SETTINGS
        self.loaded_heads = load_served_heads(self, s.heads)
        self._started = int(time.time())
        self._pipeline: ClipPipeline | None = None
        self._pipeline_lock = asyncio.Lock()
        self._collections: Collections | None = None
        self._collections_lock = asyncio.Lock()
        self._stopping = False
        self.encoder = Dependency("zest-clip-encoder", self.encoder_proxy, s.probe_timeout_s)
        self.recommender = Dependency("zest-recommender", self.recommender_proxy, s.probe_timeout_s)
        self.has_rec_model = has_model(s)  # without one, /items and /recommend answer 503 here
        self.deps = Dependencies([self.encoder, self.recommender])
        install_header_timeout(s.header_timeout_s)  # this worker's uvicorn, before it accepts anything
        install_drain(PUBLIC_SERVICE, s.shutdown_timeout_s, on_term=self._on_term)
        log.info(API_KEYS.describe())

    async def pipeline(self) -> ClipPipeline:
        """Built on first use: it needs the encoder service's model info, which may start after us."""
        if self._pipeline is None:
            async with self._pipeline_lock:
                if self._pipeline is None:
                    info = await self.encoder.call("info", idempotent=True, deadline_s=INFO_DEADLINE_S)
                    encode = functools.partial(self.encoder.call, idempotent=True)  # awaited on the loop
                    self._pipeline = ClipPipeline(self.settings, EncoderInfo(**info),
                                                  functools.partial(encode, "encode_pixels"),
                                                  functools.partial(encode, "encode_texts"),
                                                  heads=self.loaded_heads)
                    for head in self.loaded_heads:
                        if head.model_id != info["model_id"]:
                            log.warning("head %s was made for model %s, not %s: /classify refuses it (409)",
                                        head.name, head.model_id, info["model_id"])
        return self._pipeline

    async def __is_ready__(self) -> bool:
        """/readyz: every model service answers its probe and the pipeline is built. Never takes much
        longer than ZEST_PROBE_TIMEOUT_S: a service that is down, restarting or loading makes it 503."""
        if self._stopping:
            return False
        try:
            if not await self.deps.ready():
                return False
            await asyncio.wait_for(self.pipeline(), self.settings.probe_timeout_s)
            return True
        except Exception:  # noqa: BLE001 - not ready, whatever the reason; the calls path logs failures
            return False

    async def __is_alive__(self) -> bool:
        """/livez: False once a model service that was up has not answered for ZEST_LIVENESS_GRACE_S —
        it is not coming back by itself (e.g. a worker that crashes while loading, again and again), so
        this process can no longer serve and the orchestrator should restart it."""
        dead = await self.deps.dead(self.settings.liveness_grace_s)
        if dead:
            log.error("not live: %s down for more than %.0f s", ", ".join(dead), self.settings.liveness_grace_s)
        return not dead

    async def _on_term(self) -> None:
        self._stopping = True
        down = self.deps.stopping()
        if down:
            log.error("stopping with no worker left for %s: requests waiting on it answer 503 now",
                      ", ".join(down))

    @bentoml.on_shutdown
    async def _close_probes(self) -> None:
        await self.deps.close()

    async def _run(self, fn, *args):
        """Await `fn(pipeline, *args)`, a pipeline endpoint (it runs its blocking steps in worker threads)."""
        return await fn(await self.pipeline(), *args)

    async def _respond(self, fn, *args) -> Response:
        """`_run`, and its pydantic result serialised in a worker thread (`_json_response`)."""
        result = await self._run(fn, *args)
        return await _json_response(lambda: result)

    @app.post("/classify", response_model=ClassifyResponse)
    async def classify(self, body: Classify):
        """Classify images zero-shot (`labels`, `templates`) or with an adapted head (`head`): multipart
        (`images` files + the other fields) or JSON; `top_k` labels per image."""
        raw = raw_images(body.images)
        return await self._respond(lambda p: p.classify(raw, body.labels, body.templates, body.top_k, head=body.head,
                                                        threshold=body.threshold))

    @app.get("/heads", response_model=HeadsResponse)
    async def list_heads(self):
        """The adapted heads loaded (ZEST_HEADS): classes, the model each was made for, held-out metrics."""
        return await self._respond(lambda p: p.list_heads())

    @app.post("/embed/image", response_model=EmbedResponse)
    async def embed_image(self, body: EmbedImage):
        """L2-normalised image embeddings: multipart `images` files, or JSON {"images": [...]}."""
        raw = raw_images(body.images)
        pipeline = await self.pipeline()
        feats = await pipeline.image_features(raw)
        return await _json_response(lambda: pipeline.embed_response(feats))

    @app.post("/embed/text", response_model=EmbedResponse)
    async def embed_text(self, body: EmbedText):
        """L2-normalised text embeddings: JSON {"texts": [...]}; long texts are truncated like CLIP does."""
        pipeline = await self.pipeline()
        feats = await pipeline.text_features(body.texts)
        return await _json_response(lambda: pipeline.embed_response(feats))

    @app.get("/info", response_model=InfoResponse)
    async def info(self):
        """What this server runs: model, dimension, runtime, device, heads, template sets, and whether each
        model service answers its readiness probe now."""
        ready = await asyncio.gather(*(d.probe() for d in self.deps.all))
        try:
            pipeline = await asyncio.wait_for(self.pipeline(), self.settings.probe_timeout_s) if ready[0] else None
        except Exception:  # noqa: BLE001 - not up yet: the model fields are null, the services say why
            pipeline = None
        return server_info(pipeline, {d.name: ok for d, ok in zip(self.deps.all, ready)}, self.has_rec_model,
                           [h.name for h in self.loaded_heads])

    @app.get("/templates", response_model=TemplatesResponse)
    def templates(self):
        """The shipped prompt template sets."""
        from ..prompts import list_template_sets

        return TemplatesResponse(template_sets=[
            TemplateSetInfo(name=s.name, description=s.description, templates=list(s.templates))
            for s in list_template_sets()
        ])

    # -- recommender ----------------------------------------------------------------------
    async def _rec(self, method: str, *args):
        """Call the recommender service; its user errors come back raised, with their status (transport.py)."""
        if not self.has_rec_model:
            raise Unavailable(NO_MODEL)
        # An upsert by id, a read or a ranking can be sent again; a delete is not: never repeated.
        return await self.recommender.call(method, *args, idempotent=method != "delete_item")

    @app.post("/items", response_model=ItemsResponse)
    async def upsert_items(self, body: Items):
        """Insert or update items: {"items": [{"id": ..., "text": ...}]}. Embedded on write, persisted."""
        return await self._rec("upsert_items", body.items)

    @app.get("/items/{item_id}", response_model=ItemResponse)
    async def get_item(self, item_id: ItemId):
        return await self._rec("get_item", item_id)

    @app.delete("/items/{item_id}", response_model=ItemDeletedResponse)
    async def delete_item(self, item_id: ItemId):
        return await self._rec("delete_item", item_id)

    @app.post("/recommend", response_model=RecommendResponse)
    async def recommend(self, body: Recommend):
        """Top-k items for a history of item ids and/or free-text descriptions of liked items."""
        return await self._rec("recommend", body)

    # -- collections: image/text search over stored CLIP embeddings (service/collections.py) ----------
    # Served by the public service itself: it holds the pipeline (decoding, preprocessing, the encoder
    # service's batched calls); the store is ZEST_VECTOR_STORE's "collections" role.
    async def collections(self):
        """The collections logic, built on first use (it needs the encoder's model info, like pipeline())."""
        if self._collections is None:
            pipeline = await self.pipeline()
            async with self._collections_lock:
                if self._collections is None:
                    from .collections import Collections
                    from .recommender import open_store_for

                    store = await anyio.to_thread.run_sync(open_store_for, self.settings, "collections")
                    self._collections = Collections(store, pipeline, self.settings)
        return self._collections

    async def _in_collections(self, fn):
        """Await `fn(collections)` (its store calls and decoding run in worker threads)."""
        return await fn(await self.collections())

    @app.post("/collections", response_model=CollectionInfoResponse)
    async def create_collection(self, request: Request, body: CollectionCreate):
        """Create a collection for this server's CLIP model: {"name": ..., "model": optional}."""
        scopes.check_collection(request.scope, body.name)
        return await self._in_collections(lambda c: c.create(body.name, body.model, body.thumbnails))

    @app.get("/collections", response_model=CollectionsResponse)
    async def list_collections(self, request: Request):
        listed = await self._in_collections(lambda c: c.list())
        return scopes.visible_collections(request.scope, listed)

    @app.get("/collections/{name}", response_model=CollectionInfoResponse)
    async def describe_collection(self, name: Name):
        return await self._in_collections(lambda c: c.describe(name))

    @app.delete("/collections/{name}", response_model=CollectionDroppedResponse)
    async def drop_collection(self, name: Name):
        return await self._in_collections(lambda c: c.drop(name))

    @app.post("/collections/{name}/items", response_model=CollectionItemsResponse)
    async def add_collection_items(self, name: Name, body: CollectionItems):
        """Add or replace items, embedded on write: multipart `images` files (+ `ids`, `metadata`), or JSON
        {"items": [{"id", "text" | "image", "metadata"}]}."""
        items = collection_items(body)
        return await self._in_collections(lambda c: c.add(name, items))

    @app.post("/collections/{name}/search", response_model=CollectionSearchResponse)
    async def search_collection(self, name: Name, body: CollectionSearch):
        """Top-k items by text, image, vector or another item ("more like this"): JSON {"text" | "image" |
        "vector" | "like", "k", "filter"}, or multipart with one file in `images` (+ `k`, `filter`)."""
        query = collection_query(body)
        return await self._in_collections(lambda c: c.search(name, **query))

    # before the item route below, whose {item_id:path} would take ".../thumbnail" as part of the id
    @app.get("/collections/{name}/items/{item_id:path}/thumbnail", response_class=Response,
             responses={200: {"description": "the item's JPEG", "content": {"image/jpeg": {}}}})
    async def get_collection_thumbnail(self, name: Name, item_id: ItemId):
        """The item's thumbnail (a JPEG <= 256 px, <= 16 kB), kept when the collection was created with
        `"thumbnails": true`; 404 when there is none."""
        data = await self._in_collections(lambda c: c.thumbnail(name, item_id))
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})

    @app.get("/collections/{name}/items/{item_id:path}", response_model=CollectionHit, response_model_exclude_none=True)
    async def get_collection_item(self, name: Name, item_id: ItemId):
        return await self._in_collections(lambda c: c.get_item(name, item_id))

    @app.delete("/collections/{name}/items/{item_id:path}", response_model=CollectionItemDeletedResponse)
    async def delete_collection_item(self, name: Name, item_id: ItemId):
        return await self._in_collections(lambda c: c.delete_item(name, item_id))

    # -- OpenAI-compatible embeddings (service/openai_api.py) --------------------------------------------
    @app.post("/v1/embeddings", response_model=OpenAIEmbeddingsResponse)
    async def openai_embeddings(self, body: OpenAIEmbeddings):
        """OpenAI's embeddings API: `input` texts, or images with `"modality": "image"` (Infinity's extension);
        the vectors are /embed/text's and /embed/image's."""
        inputs = openai_api.inputs_of(body)
        pipeline = await self.pipeline()
        info = pipeline.info
        openai_api.check_model(body.model, info.model_id)
        openai_api.check_dimensions(body.dimensions, info.model_id, info.dim)
        if body.modality == "image":
            feats, tokens = await pipeline.image_features(openai_api.image_inputs(inputs)), 0
        else:
            count_tokens = functools.partial(self.encoder.call, "count_tokens", idempotent=True)
            feats, tokens = await openai_api.text_features(pipeline, inputs, count_tokens)
        return await _json_response(
            lambda: openai_api.response(feats, body.encoding_format, info.model_id, tokens))

    @app.get("/v1/models", response_model=OpenAIModelsResponse)
    async def openai_models(self):
        """The model /v1/embeddings serves (the CLIP model this server runs)."""
        return openai_api.models_response((await self.pipeline()).info.model_id, self._started)

    @app.get("/v1/models/{model:path}", response_model=OpenAIModel)
    async def openai_model(self, model: ModelId):
        served = (await self.pipeline()).info.model_id
        openai_api.check_model(model, served)
        return openai_api.models_response(served, self._started)["data"][0]


playground.install(app)  # GET /ui (service/playground.py)


# The scope an API key needs for each route (service/scopes.py), "METHOD path" as the route declares it.
# Every route must be here: the service does not start otherwise (and tests/test_scopes.py fails).
# "name": the path parameter holding the collection; "body"/"list": the route checks or filters collections.
ROUTE_SCOPES: dict[str, Access] = {
    "GET /docs.json": PUBLIC,
    "POST /classify": READ,
    "GET /heads": READ,
    "POST /embed/image": READ,
    "POST /embed/text": READ,
    "GET /templates": READ,
    "POST /items": WRITE,
    "GET /items/{item_id}": READ,
    "DELETE /items/{item_id}": WRITE,
    "POST /recommend": READ,
    "POST /collections": Access(Scope.admin, "body"),
    "GET /collections": Access(Scope.read, "list"),
    "GET /collections/{name}": Access(Scope.read, "name"),
    "DELETE /collections/{name}": Access(Scope.admin, "name"),
    "POST /collections/{name}/items": Access(Scope.write, "name"),
    "POST /collections/{name}/search": Access(Scope.read, "name"),
    "GET /collections/{name}/items/{item_id}": Access(Scope.read, "name"),
    "DELETE /collections/{name}/items/{item_id}": Access(Scope.write, "name"),
    "GET /collections/{name}/items/{item_id}/thumbnail": Access(Scope.read, "name"),
    "GET /info": READ,
    "GET /ui": PUBLIC,  # the playground's page and files: it asks for a key itself
    "GET /ui/{file}": PUBLIC,
    "POST /v1/embeddings": READ,
    "GET /v1/models": READ,
    "GET /v1/models/{model}": READ,
}
scopes.check_table(app.routes, ROUTE_SCOPES)

# Around the whole public service, BentoML's own routes included (first added = outermost): one error shape
# for every response, then the API-key check (service/auth.py).
# (bentoml.service makes Zest a bentoml Service; its stubs keep the class's type)
Zest.add_asgi_middleware(errors.ErrorShapeMiddleware)  # type: ignore[attr-defined]
Zest.add_asgi_middleware(ApiKeyMiddleware, keys=API_KEYS,  # type: ignore[attr-defined]
                         app_routes=lambda: app.routes, table=ROUTE_SCOPES)
openapi.install(app, keys_on=bool(API_KEYS), scopes=ROUTE_SCOPES)
