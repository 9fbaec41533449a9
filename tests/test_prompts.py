import pytest

from zest.models.errors import NotFound
from zest.prompts import (
    TemplateError,
    list_template_sets,
    load_template_set,
    user_template_set,
    validate_template,
)
from zest.prompts.templates import MAX_TEMPLATES, load_file


def test_shipped_sets_load_and_pass_the_validator():
    sets = {s.name: s for s in list_template_sets()}
    assert {"imagenet", "imagenet-simple", "cifar", "photo"} <= sets.keys()
    assert len(sets["imagenet"].templates) == 80  # the CLIP paper's ImageNet ensemble
    assert len(sets["imagenet-simple"].templates) == 7
    assert sets["photo"].templates == ("a photo of a {}.",)
    for s in sets.values():
        assert s.description
        for t in s.templates:
            assert validate_template(t) == t


def test_imagenet_set_matches_open_clip_reference():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    assert load_template_set("imagenet").templates == tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


@pytest.mark.parametrize("bad", [
    "{0.__class__}", "{0.__class__.__mro__}", "{x[0]}", "{name}", "{0}", "{!r}", "{:>10}", "{:{}}",
    "{} and {}", "no placeholder", "", "   ", "{", "}", "a {} }", 42, None, "x" * 400 + "{}",
])
def test_validator_rejects_injection_and_malformed(bad):
    with pytest.raises(TemplateError):
        validate_template(bad)


@pytest.mark.parametrize("good", ["a photo of a {}.", "{}", "a {{literal}} brace and a {}", "an émoji 🐱 {}"])
def test_validator_accepts_single_bare_placeholder(good):
    assert validate_template(good) == good


def test_user_label_is_inserted_verbatim_never_interpreted():
    s = user_template_set(["a photo of a {}."])
    assert s.render("{0.__class__}") == ["a photo of a {0.__class__}."]


def test_user_template_set_limits():
    with pytest.raises(TemplateError):
        user_template_set([])
    with pytest.raises(TemplateError):
        user_template_set("a photo of a {}.")  # a string, not a list
    with pytest.raises(TemplateError):
        user_template_set([f"photo {i} of a {{}}" for i in range(MAX_TEMPLATES + 1)])
    with pytest.raises(TemplateError):
        user_template_set(["a {}", "a {}"])


def test_unknown_set_names_known_ones():
    with pytest.raises(NotFound, match="imagenet"):
        load_template_set("nope")


def test_bad_set_file_is_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: evil\ntemplates:\n  - 'a {0.__globals__}'\n")
    with pytest.raises(TemplateError):
        load_file(path)


def test_digest_depends_on_content_not_name():
    a = user_template_set(["a {}"])
    assert a.digest == user_template_set(["a {}"]).digest
    assert a.digest != user_template_set(["the {}"]).digest
