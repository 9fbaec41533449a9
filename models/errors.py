"""Exceptions shared by the model layer and the service.

`InvalidInput` and its subclasses are the user's fault (the service answers 4xx with the message);
`ModelLoadError` means the configured model cannot be loaded (a deployment problem, not a request one).
"""


class ZestError(Exception):
    """Base class of every error zest raises on purpose."""

    status_code: int = 500


class InvalidInput(ZestError, ValueError):
    """A request or argument that zest refuses; the message names the problem."""

    status_code = 400


class PayloadTooLarge(InvalidInput):
    """An input over a configured size limit (bytes, pixels, items)."""

    status_code = 413


class NotFound(InvalidInput):
    """A name or id that does not exist (template set, item id)."""

    status_code = 404


class ModelLoadError(ZestError, RuntimeError):
    """The model spec cannot be turned into a loaded model; the message says what to do."""


class Unavailable(ZestError):
    """A part of the service is not available (e.g. no recommender model configured)."""

    status_code = 503


class InsufficientStorage(ZestError):
    """A write the store could not persist (its disk is full, read-only or failing): 507. Nothing of the write
    was stored; reads go on, and writes succeed again once there is space."""

    status_code = 507


class Conflict(InvalidInput):
    """The request contradicts what exists (a collection that exists already, or was made by another model;
    an adapted head made for another model)."""

    status_code = 409
