"""The one check and message of every size limit (models/limits.py)."""

import pytest

from zest.models.errors import InvalidInput, PayloadTooLarge
from zest.models.limits import check_at_most, check_chars, check_count


def test_within_the_limit_passes():
    check_count([1, 2], "images", 2)
    check_chars("abc", "text", 3)
    check_at_most(10, 10, "k=10")


@pytest.mark.parametrize("check, args, message", [
    (check_count, (["x"] * 5, "images", 4, True), "5 images is over the limit of 4 per request (the limit is 4)"),
    (check_chars, ("x" * 9, "items[2].text", 8),
     "items[2].text of 9 characters is over the limit of 8 characters (the limit is 8)"),
    (check_at_most, (21, 20, "k=21"), "k=21 is over the limit of 20 (the limit is 20)"),
])
def test_one_message_holds_both_wordings(check, args, message):
    with pytest.raises(PayloadTooLarge) as info:
        check(*args)
    assert str(info.value) == message and info.value.status_code == 413


def test_a_note_and_another_error_class():
    with pytest.raises(InvalidInput) as info:
        check_chars("x" * 3, "label 0", 2, note="shorten it", error=InvalidInput)
    assert type(info.value) is InvalidInput
    assert str(info.value) == "label 0 of 3 characters is over the limit of 2 characters (the limit is 2; shorten it)"
