"""Which scope each route needs: the table (`ROUTE_SCOPES` in service/app.py, next to the routes) and its use.

- `Access(scope, collection)`: the least scope a key needs (`None` = public: no key at all), and where the
  route's collection is: `"name"` (that path parameter; the key must be allowed that collection), `"body"`
  (the route checks the name it reads with `check_collection`) or `"list"` (the route shows only allowed
  collections, `visible_collections`). A key limited to collections may use a route with no collection up to
  `read` only (it may embed, classify and read the catalogue, never write outside its collections).
- `check_table(app, table)`: every route of the app has an entry and every entry a route, else the service
  does not start (a new endpoint cannot be added without saying who may call it).
- `RouteScopes.find(scope)`: the route an ASGI request goes to (the app's own matching) and its `Access`.
- `document(spec, table)`: each operation of the OpenAPI document says its scope (`x-zest-scope`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

from starlette.routing import BaseRoute, Match, Mount, Route

from ..models.errors import ZestError
from .keyfile import ApiKey, Scope

KEY_IN_SCOPE = "zest.api_key"  # the ASGI scope entry of the request's ApiKey (absent when keys are off)


class Access(NamedTuple):
    scope: Scope | None  # None: public
    collection: str | None = None  # "name" (path parameter), "body", "list", or None


READ, WRITE, ADMIN, PUBLIC = Access(Scope.read), Access(Scope.write), Access(Scope.admin), Access(None)


class Forbidden(ZestError):
    """A valid key that may not do this (its scope, or the collection)."""

    status_code = 403


def route_key(method: str, path: str) -> str:
    return f"{method.upper()} {path}"


def app_routes(routes: list[BaseRoute]) -> Iterator[Route | Mount]:
    """Every HTTP route, in matching order, through FastAPI's included routers (BentoML puts the service's
    routes in one). A `Mount` (e.g. static files) is one entry, `GET <path>/{path}`, for all under it."""
    for route in routes:
        if isinstance(route, Route | Mount):
            yield route
        elif hasattr(route, "original_router"):  # fastapi >= 0.13x keeps an included router as one entry
            prefix = getattr(getattr(route, "include_context", None), "prefix", "")
            if prefix:
                raise ValueError(f"an included router with the prefix {prefix!r}: scopes.py does not match those")
            yield from app_routes(route.original_router.routes)


def route_keys(route: Route | Mount) -> list[str]:
    methods = route.methods or () if isinstance(route, Route) else ("GET",)
    return [route_key(m, route.path_format) for m in sorted(methods) if m != "HEAD"]


def check_table(routes: list[BaseRoute], table: Mapping[str, Access]) -> None:
    """Raise ValueError naming every route without an entry, and every entry without a route."""
    keys = [k for r in app_routes(routes) for k in route_keys(r)]
    missing = [k for k in keys if k not in table]
    stale = [k for k in table if k not in keys]
    if missing or stale:
        problems = ([f"no scope for {', '.join(missing)}"] if missing else []) + (
            [f"no route for {', '.join(stale)}"] if stale else [])
        raise ValueError("ROUTE_SCOPES (service/app.py) must name every route exactly: " + "; ".join(problems))
    for key, access in table.items():
        if access.collection not in (None, "body", "list") and "{" + access.collection + "}" not in key:
            raise ValueError(f"ROUTE_SCOPES: {key} has no path parameter {access.collection!r}")


class RouteScopes:
    """The app's routes with their `Access`, for the middleware (the routes are read on first use: BentoML
    rebinds them to the service class after import)."""

    def __init__(self, routes: Callable[[], list[BaseRoute]], table: Mapping[str, Access]) -> None:
        self.routes = routes
        self.table = table
        self._matchers: list[tuple[Route | Mount, dict[str, Access]]] | None = None

    def find(self, scope: dict) -> tuple[str, Access, dict[str, Any]] | None:
        """(route key, access, path parameters) of the route this request goes to; None if no route takes its
        path and method (a 404 or 405 follows: any valid key may see that)."""
        if self._matchers is None:
            self._matchers = [(r, {k.split(" ", 1)[0]: self.table[k] for k in route_keys(r)})
                              for r in app_routes(self.routes())]
        method = scope.get("method", "GET").upper()
        method = "GET" if method == "HEAD" else method
        for route, by_method in self._matchers:
            match, child = route.matches(scope)
            if isinstance(route, Mount) and match is Match.FULL and method not in by_method:
                return None  # a mount takes every method of its paths: only GET is declared
            if match is Match.FULL and method in by_method:
                return route_key(method, route.path_format), by_method[method], child.get("path_params", {})
        return None


def refusal(key: ApiKey, what: str, access: Access, params: Mapping[str, Any]) -> str | None:
    """Why `key` may not call the route `what` (e.g. "DELETE /collections/{name}"), or None if it may."""
    assert access.scope is not None
    if key.scope < access.scope:
        return (f"the API key {key.name!r} has scope {key.scope.name}; {what} needs scope {access.scope.name}"
                f"{' or admin' if access.scope is Scope.write else ''}")
    if key.collections is None:
        return None
    if access.collection in (None, "body", "list"):
        if access.collection is None and access.scope > Scope.read:
            return (f"the API key {key.name!r} is limited to collections ({', '.join(sorted(key.collections))}): "
                    f"{what} needs scope {access.scope.name} on every collection")
        return None
    name = params.get(access.collection)
    if name not in key.collections:
        return collection_refusal(key, str(name))
    return None


def collection_refusal(key: ApiKey, name: str) -> str:
    return (f"the API key {key.name!r} may not use the collection {name!r} (it may use: "
            f"{', '.join(sorted(key.collections or ()))})")


def check_collection(request_scope: Mapping[str, Any], name: object) -> None:
    """For a route whose collection is in its body (`Access(..., "body")`): 403 if the key may not use it."""
    key: ApiKey | None = request_scope.get(KEY_IN_SCOPE)
    if key is not None and key.collections is not None and name not in key.collections:
        raise Forbidden(collection_refusal(key, str(name)))


def visible_collections(request_scope: Mapping[str, Any], listed: dict) -> dict:
    """For a route that lists collections (`Access(..., "list")`): only those the key may use."""
    key: ApiKey | None = request_scope.get(KEY_IN_SCOPE)
    if key is None or key.collections is None:
        return listed
    return {**listed, "collections": [c for c in listed["collections"] if c["name"] in key.collections]}


def document(spec: dict, table: Mapping[str, Access], keys_on: bool) -> None:
    """Each operation: `x-zest-scope` (read, write, admin or public), a line in its description, and with keys
    on the 403 (scope or collection refused) and 429 (rate limit) responses."""
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            access = table.get(route_key(method, path))
            if access is None:
                continue
            name = access.scope.name if access.scope is not None else "public"
            operation["x-zest-scope"] = name
            note = (f"API key scope: **{name}**" + (" (or higher)" if access.scope and access.scope < Scope.admin
                                                     else "")
                    + ("; a key limited to collections may use only those" if access.collection else ""))
            operation["description"] = (operation.get("description", "").rstrip() + "\n\n" + note).strip()
            if access.scope is None:
                operation["security"] = []
            elif keys_on:
                error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
                responses = operation.setdefault("responses", {})
                responses["403"] = {"description": f"The key's scope is below {name}, or it may not use this "
                                                   "collection: the message says which", **error}
                responses["429"] = {"description": "The key's rate limit is spent: retry after Retry-After seconds",
                                    "headers": {"Retry-After": {"schema": {"type": "integer"}}}, **error}
