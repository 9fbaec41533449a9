"""Size limits on inputs: the one place their checks and their message are written.

Every limit zest puts on what a request holds -- how many images, texts, labels, items or ids; how many
characters in a text; how many bytes or pixels; how large k -- is checked with these and refused with
`PayloadTooLarge` (413) -- a label over its length is refused with `InvalidInput` (400), as it always was --
in one message format:

    {subject} is over the limit of {limit}[ unit][ per request] (the limit is {limit}[; note])

e.g. ``5 images is over the limit of 4 per request (the limit is 4)``. It holds both wordings zest's messages
have used ("over the limit of N" and "the limit is N"), so a client matching either keeps matching.
"""

from __future__ import annotations

from collections.abc import Sized

from .errors import InvalidInput, PayloadTooLarge


def too_large(subject: str, limit: int, unit: str = "", per_request: bool = False, note: str = "",
              error: type[InvalidInput] = PayloadTooLarge) -> InvalidInput:
    """The error for `subject` (what was sent and how much: "5 images", "k=21") over `limit`."""
    per = " per request" if per_request else ""
    unit = f" {unit}" if unit else ""
    note = f"; {note}" if note else ""
    return error(f"{subject} is over the limit of {limit}{unit}{per} (the limit is {limit}{note})")


def check_count(values: Sized, what: str, limit: int, per_request: bool = False) -> None:
    """At most `limit` entries in `values` (`what`: a plural noun naming them, "images", "ids in history")."""
    if len(values) > limit:
        raise too_large(f"{len(values)} {what}", limit, per_request=per_request)


def check_chars(text: str, what: str, limit: int, note: str = "", error: type[InvalidInput] = PayloadTooLarge) -> None:
    """At most `limit` characters in `text` (`what` names it: "items[3].text")."""
    if len(text) > limit:
        raise too_large(f"{what} of {len(text)} characters", limit, "characters", note=note, error=error)


def check_at_most(value: int, limit: int, subject: str, unit: str = "", note: str = "") -> None:
    """`value` <= `limit`; `subject` says what was measured and how much ("k=21", "request body of 9000 bytes")."""
    if value > limit:
        raise too_large(subject, limit, unit, note=note)


# Rules on the shape of ids, names and fields, declared once: the request schemas (service/schemas.py, and so the
# OpenAPI document), the stores (store/base.py; store/milvus.py's primary key), the recommender, and the checks
# below for callers past the schemas (the pipeline called from the CLI or tests, the stores) use these.
MAX_ID_CHARS = 256  # an item id: 1 to 256 characters
COLLECTION_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,62}$"  # 1-63 letters, digits or '_', starting with a letter
MIN_K = 1  # top_k, k: results asked for
MIN_INPUTS = 1  # images, texts: what one request classifies or embeds
MIN_THRESHOLD, MAX_THRESHOLD = 0, 1  # /classify's threshold: a probability


def check_k(k: object, what: str = "k") -> int:
    """`k` (`what`: its field's name, "top_k") as an integer of at least MIN_K, or InvalidInput."""
    if isinstance(k, bool) or not isinstance(k, int) or k < MIN_K:
        raise InvalidInput(f"{what} must be an integer >= {MIN_K}")
    return k


def check_inputs(values: Sized, what: str) -> None:
    """At least MIN_INPUTS entries in `values` (`what`: a plural noun naming them, "images"), or InvalidInput."""
    if len(values) < MIN_INPUTS:
        raise InvalidInput(f"{len(values) or 'no'} {what}: send at least {MIN_INPUTS}")
