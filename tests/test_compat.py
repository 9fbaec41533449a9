"""Every patch of a library's internals is guarded: on the versions it was checked on it applies; on any other
version, or when the internals it relies on are gone, it is disabled with a warning and zest falls back to the
library's own behaviour."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import weakref
from collections.abc import Iterator

import pytest

from zest.models import compat as model_compat
from zest.service import compat, errors, lifecycle, transport
from zest.service.errors import CalleeUserError, from_callee

ALL_PATCHES = (*compat.PATCHES, model_compat.OPEN_CLIP_TRIMMED_TEXT)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture()
def warnings() -> Iterator[list[str]]:
    handler = _Records()
    logger = logging.getLogger("zest")
    logger.addHandler(handler)
    model_compat._version_checked.cache_clear()
    model_compat._MISSING_WARNED.clear()
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        model_compat._version_checked.cache_clear()
        model_compat._MISSING_WARNED.clear()


@pytest.fixture()
def unchecked(monkeypatch, warnings) -> list[str]:
    """Every library reports a version no patch was checked on."""
    monkeypatch.setattr(model_compat, "installed_version", lambda distribution: "999.0")
    return warnings


def _named(messages: list[str], patch: model_compat.Patch) -> bool:
    return any(patch.name in m and "disabled" in m for m in messages)


@pytest.mark.parametrize("patch", ALL_PATCHES, ids=lambda p: p.name)
def test_each_patch_says_what_it_fixes_where_upstream_and_is_checked_on_the_installed_version(patch, warnings):
    assert patch.fixes and patch.upstream and patch.checked
    assert model_compat.enabled(patch), warnings  # CI runs what the patches were checked on
    assert not warnings


@pytest.mark.parametrize("patch", ALL_PATCHES, ids=lambda p: p.name)
def test_an_unchecked_version_disables_each_patch_with_one_warning(patch, unchecked):
    assert not model_compat.enabled(patch)
    assert not model_compat.enabled(patch)
    assert sum(patch.name in m for m in unchecked) == 1
    assert "999.0" in unchecked[0] and patch.checked in unchecked[0]


def test_uvicorn_header_timeout_is_not_installed_on_an_unchecked_uvicorn(unchecked):
    from uvicorn.protocols.http.h11_impl import H11Protocol

    before = dict(H11Protocol.__dict__)
    assert compat.install_header_timeout(5.0) is False
    assert dict(H11Protocol.__dict__) == before
    assert _named(unchecked, compat.UVICORN_HEADER_TIMEOUT)


def test_uvicorn_header_timeout_needs_the_protocol_methods(monkeypatch, warnings):
    class Bare:
        pass

    monkeypatch.setattr(compat, "_protocol_classes", lambda: [Bare])
    assert compat.install_header_timeout(5.0) is False
    assert "_zest_header_timeout_s" not in Bare.__dict__
    assert any("lacks the internals" in m for m in warnings)


def test_bentoml_timeout_middleware_is_left_alone_on_an_unchecked_bentoml(unchecked):
    cls = compat._timeout_middleware()
    before = cls.__dict__.get("__call__")
    assert compat.release_request_timers() is False
    assert cls.__dict__.get("__call__") is before
    assert _named(unchecked, compat.BENTOML_REQUEST_TIMERS)


def test_bentoml_timeout_middleware_patch_needs_set_timer_out(monkeypatch, warnings):
    class Middleware:  # a BentoML whose middleware no longer has the method the patch calls
        pass

    monkeypatch.setattr(compat, "_timeout_middleware", lambda: Middleware)
    assert compat.release_request_timers() is False
    assert "__call__" not in Middleware.__dict__


def test_remote_proxy_address_and_its_guard(monkeypatch, warnings):
    from _bentoml_impl.client import RemoteProxy

    proxy = RemoteProxy("http://127.0.0.1:9")
    assert compat.remote_address(proxy) == "http://127.0.0.1:9"
    assert compat.remote_address(object()) is None  # served in this process
    assert transport.Dependency("enc", proxy, probe_timeout_s=0.1)._remote
    monkeypatch.setattr(model_compat, "installed_version", lambda distribution: "999.0")
    model_compat._version_checked.cache_clear()
    assert compat.remote_address(proxy) is None
    dep = transport.Dependency("enc", proxy, probe_timeout_s=0.1)
    assert not dep._remote  # no own health probes: calls go through BentoML's proxy as they are
    assert _named(warnings, compat.BENTOML_REMOTE_PROXY)


def test_worker_discovery_reads_bentoml_worker_command_lines_only_when_checked(monkeypatch, warnings):
    cmdline = ["/usr/bin/python3", "-m", compat.WORKER_MODULE, "--service-name", "zest-recommender", "--fd", "3"]
    assert compat.worker_service_name(cmdline) == "zest-recommender"
    assert compat.worker_service_name(["python3", "-m", "http.server"]) is None
    monkeypatch.setattr(model_compat, "installed_version", lambda distribution: "999.0")
    model_compat._version_checked.cache_clear()
    assert compat.worker_service_name(cmdline) is None
    dep = transport.Dependency("fake", object(), probe_timeout_s=0.1)
    dep._url = "unix:///tmp/zest.sock"
    assert dep.worker_pids() is None  # unknown, not "no worker": the probe alone decides
    assert _named(warnings, compat.BENTOML_WORKER_CMDLINE)


def test_the_sigterm_drain_is_not_installed_on_an_unchecked_uvicorn(unchecked):
    assert lifecycle.install_drain("zest", 5.0) is False
    assert _named(unchecked, compat.UVICORN_SIGNAL_DRAIN)


def test_callee_user_errors_are_read_back_only_in_the_checked_format(monkeypatch, warnings):
    from http import HTTPStatus

    from bentoml.exceptions import BentoMLException

    raised = BentoMLException('[{"error": "unknown item id: x"}]', error_code=HTTPStatus.NOT_FOUND)
    assert str(from_callee(raised)) == "unknown item id: x"
    errors.hide_callee_user_errors()
    logger = logging.getLogger(compat.API_ERROR_LOGGER)
    assert any(isinstance(f, errors._HideCalleeUserErrors) for f in logger.filters)
    record = logging.LogRecord(logger.name, logging.ERROR, __file__, 1, "boom", None,
                               (CalleeUserError, CalleeUserError(errors.InvalidInput("bad")), None))
    assert not logger.filters[-1].filter(record)

    monkeypatch.setattr(model_compat, "installed_version", lambda distribution: "999.0")
    model_compat._version_checked.cache_clear()
    assert compat.callee_error_logger() is None
    assert from_callee(raised) is None  # an unknown format is a failure of the call, not a user error
    assert _named(warnings, compat.BENTOML_CALLEE_ERRORS)


def test_the_bento_image_leaves_out_bentoml_system_layer_only_on_a_checked_bentoml(monkeypatch, warnings):
    import bentoml

    from zest.service.bento_image import BASE_IMAGE, bento_image

    image = bento_image()
    assert type(image) is not bentoml.images.Image and image.base_image == BASE_IMAGE
    assert not any("apt-get" in c for c in image.commands)
    monkeypatch.setattr(model_compat, "installed_version", lambda distribution: "999.0")
    model_compat._version_checked.cache_clear()
    image = bento_image()  # BentoML's own image: its system layer comes back
    assert type(image) is bentoml.images.Image and image.base_image == BASE_IMAGE
    assert "apt-get" in image.commands[0]
    assert _named(warnings, compat.BENTOML_IMAGE_LAYER)


def test_the_bento_image_patch_needs_a_post_init_that_only_adds_the_layer(monkeypatch, warnings):
    import attrs
    import bentoml

    @attrs.define
    class MoreInit(bentoml.images.Image):  # a BentoML whose post-init also sets something else
        def __attrs_post_init__(self) -> None:
            super().__attrs_post_init__()
            self.lock_python_packages = False

    monkeypatch.setattr(bentoml.images, "Image", MoreInit)
    assert compat.runtime_image_class("python:3.11-slim") is MoreInit  # skipping that post-init would lose more
    assert any(compat.BENTOML_IMAGE_LAYER.name in m and "lacks the internals" in m for m in warnings)


def test_open_clip_trimmed_text_tower_falls_back_to_full_padding(tiny_encoder, monkeypatch, warnings):
    from zest.models.text_tower import trimmed_text_encoder

    model = tiny_encoder.model
    assert trimmed_text_encoder(model) is not None
    monkeypatch.setattr(model_compat, "installed_version", lambda distribution: "999.0")
    model_compat._version_checked.cache_clear()
    assert trimmed_text_encoder(model) is None
    assert _named(warnings, model_compat.OPEN_CLIP_TRIMMED_TEXT)


def test_open_clip_trimmed_text_tower_needs_the_attributes_it_reads(tiny_encoder, warnings):
    class Stripped:  # what a CLIP class that renamed its text attributes would look like to the patch
        transformer = tiny_encoder.model.transformer

    assert model_compat.clip_trimmed_text_encoder(Stripped()) is None
    assert any("lacks the internals" in m for m in warnings)


def test_the_declared_dependencies_admit_only_the_versions_each_patch_was_checked_on():
    """pyproject.toml pins open_clip, BentoML and uvicorn to the ranges their patches were checked on, so an
    install never silently lands on a release where a patch is disabled (widen both together)."""
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    declared = {(r := Requirement(line)).name.replace("_", "-").lower(): r.specifier
                for line in project["dependencies"]}
    for patch in ALL_PATCHES:
        name = patch.distribution.replace("_", "-").lower()
        assert declared[name] == SpecifierSet(patch.checked), (patch.name, str(declared[name]), patch.checked)


def test_bentoml_request_timeout_releases_each_request_when_it_ends():
    """BentoML's TimeoutMiddleware armed a 300 s timer per request that kept the request's context (its
    OpenTelemetry span, ...) alive until it fired: the soak (tests/test_soak.py) grew by hundreds of MB. Patched by
    compat.release_request_timers(), which service/app.py applies in every worker."""
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    from zest.service.compat import release_request_timers

    release_request_timers()
    held: contextvars.ContextVar = contextvars.ContextVar("held")

    class Span:
        pass

    spans: list[weakref.ref] = []

    async def app(scope, receive, send):
        if scope.get("slow"):
            await asyncio.sleep(1)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario():
        middleware = TimeoutMiddleware(app, timeout=300)
        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        async def request(scope):
            span = Span()  # what the OpenTelemetry middleware, outside this one, puts in the context
            spans.append(weakref.ref(span))
            held.set(span)
            await middleware(scope, None, send)

        for _ in range(50):
            await asyncio.create_task(request({"type": "http"}))
        gc.collect()
        alive = sum(ref() is not None for ref in spans)
        timers = [h for h in asyncio.get_running_loop()._scheduled if not h.cancelled()]
        statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
        sent.clear()
        await TimeoutMiddleware(app, timeout=0.05)({"type": "http", "slow": True}, None, send)  # still times out
        return alive, timers, statuses, sent

    alive, timers, statuses, timed_out = asyncio.run(scenario())
    assert alive <= 1 and timers == [] and statuses == [200] * 50, (alive, timers)  # unpatched: 50 alive
    assert timed_out[0]["status"] == 504 and b"Not able to process" in timed_out[1]["body"]
