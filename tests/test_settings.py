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


def test_api_keys_from_a_list_or_a_file_and_never_in_a_repr(monkeypatch, tmp_path):
    from zest.service.auth import load_api_keys

    monkeypatch.setenv("ZEST_API_KEYS", " k-one-secret , k-two-secret ,")
    s = Settings.from_env()
    assert "secret" not in repr(s)
    keys = load_api_keys(s.api_keys)
    assert len(keys) == 2 and keys.accepts("k-two-secret") and not keys.accepts("k-two-secre")
    assert "secret" not in repr(keys) + keys.describe()
    path = tmp_path / "keys"
    path.write_text("# comment\nf-one-secret\n\n  f-two-secret  \n")
    monkeypatch.setenv("ZEST_API_KEYS", str(path))
    keys = load_api_keys(Settings.from_env().api_keys)
    assert len(keys) == 2 and keys.accepts("f-two-secret") and not keys.accepts("# comment")
    assert str(path) in keys.describe() and "secret" not in keys.describe()
    assert not load_api_keys("") and "off" in load_api_keys("").describe()


@pytest.mark.parametrize("content", [None, "# only a comment\n\n"])
def test_a_missing_or_empty_key_file_stops_the_start_naming_the_file(monkeypatch, tmp_path, content):
    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("ZEST_API_KEYS", str(path))
    with pytest.raises(ValueError, match="ZEST_API_KEYS names the key file") as info:
        Settings.from_env()
    assert str(path) in str(info.value)


def test_url_allow_private_must_name_allow_listed_hosts(monkeypatch):
    monkeypatch.setenv("ZEST_URL_ALLOWLIST", "images.corp.example, .cdn.corp.example")
    monkeypatch.setenv("ZEST_URL_ALLOW_PRIVATE", "Images.Corp.Example, a.cdn.corp.example")
    assert Settings.from_env().url_allow_private == ("images.corp.example", "a.cdn.corp.example")
    monkeypatch.setenv("ZEST_URL_ALLOW_PRIVATE", "images.corp.example,nas.local")
    with pytest.raises(ValueError, match="ZEST_URL_ALLOW_PRIVATE names nas.local, not in ZEST_URL_ALLOWLIST"):
        Settings.from_env()
