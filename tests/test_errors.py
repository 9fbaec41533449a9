"""service/errors.py: how a model service hands a user error back to its caller."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from zest.models.errors import ModelLoadError, PayloadTooLarge, Unavailable
from zest.service.errors import CalleeUserError, user_errors_to_caller


def test_a_user_error_leaves_a_model_service_as_its_status_and_message():
    with pytest.raises(CalleeUserError) as info, user_errors_to_caller():
        raise PayloadTooLarge("k=9 is over the limit of 8")
    assert info.value.error_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE and info.value.message == \
        "k=9 is over the limit of 8"
    for server_error in (Unavailable("no model"), ModelLoadError("broken"), ValueError("bug")):
        with pytest.raises(type(server_error)), user_errors_to_caller():
            raise server_error

