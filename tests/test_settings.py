import pytest

from zest.service.settings import Settings


def test_defaults(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("ZEST_"):
            monkeypatch.delenv(key)
    s = Settings.from_env()
    assert s.model == "zest-tiny" and s.device == "auto" and s.url_allowlist == ()


def test_env_overrides(monkeypatch):
    monkeypatch.setenv("ZEST_MODEL", "ViT-B-32/random")
    monkeypatch.setenv("ZEST_MAX_IMAGES", "3")
    monkeypatch.setenv("ZEST_URL_ALLOWLIST", "Images.Example.com, .cdn.example.org")
    monkeypatch.setenv("ZEST_URL_TIMEOUT_S", "2.5")
    s = Settings.from_env()
    assert (s.model, s.max_images, s.url_timeout_s) == ("ViT-B-32/random", 3, 2.5)
    assert s.url_allowlist == ("images.example.com", ".cdn.example.org")


@pytest.mark.parametrize("name, value", [("ZEST_MAX_IMAGES", "many"), ("ZEST_MAX_IMAGES", "0"),
                                         ("ZEST_URL_TIMEOUT_S", "soon"), ("ZEST_PROBE_TIMEOUT_S", "0"),
                                         ("ZEST_SHUTDOWN_TIMEOUT_S", "-1"), ("ZEST_BODY_TIMEOUT_S", "nan")])
def test_bad_values_name_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        Settings.from_env()
