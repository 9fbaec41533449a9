"""The forms of ZEST_API_KEYS (service/keyfile.py): the comma list and the plain file stay `admin`; YAML/JSON
files give names, scopes, collections, rate limits and hashed keys; every error names the file, never a key."""

from __future__ import annotations

import hashlib

import pytest

from zest.service.auth import load_api_keys
from zest.service.keyfile import Scope


def sha(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def test_the_comma_list_and_the_plain_file_keep_working_as_admin(tmp_path):
    keys = load_api_keys(" k-one-secret , k-two-secret ,")
    assert [(k.name, k.scope, k.collections, k.rate) for k in keys.keys] == [
        ("key-1", Scope.admin, None, None), ("key-2", Scope.admin, None, None)]
    path = tmp_path / "keys"
    path.write_text(f"# keys\nplain-key-one\n\n{sha('plain-key-two')}\n")
    keys = load_api_keys(str(path))
    assert keys.find("plain-key-one").name == "key-1" and keys.find("plain-key-two").name == "key-2"
    assert keys.find(sha("plain-key-two")) is None  # the digest is not itself a key
    assert all(k.scope is Scope.admin for k in keys.keys)


def test_a_yaml_file_names_scopes_collections_rates_and_hashed_keys(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text(f"""
# zest API keys
keys:
  - name: search-frontend
    key: {sha('front-secret-1')}
    scope: read
    collections: [products, docs]
    rate: 20
    burst: 40
  - name: indexer
    key: index-secret-2
    scope: write
  - name: ops
    key: ops-secret-3
    scope: admin
  - name: slow
    key: slow-secret-4
    rate: 0.5
""")
    keys = load_api_keys(str(path))
    front = keys.find("front-secret-1")
    assert (front.name, front.scope, front.collections, front.rate, front.burst) == (
        "search-frontend", Scope.read, frozenset({"products", "docs"}), 20.0, 40)
    assert keys.find("index-secret-2").scope is Scope.write and keys.find("ops-secret-3").scope is Scope.admin
    slow = keys.find("slow-secret-4")
    assert slow.scope is Scope.read and (slow.rate, slow.burst) == (0.5, 1)  # read and burst 1 by default
    assert keys.find("nope") is None and keys.find("") is None
    line = keys.describe()
    assert "4 key(s)" in line and "read 2, write 1, admin 1" in line and "1 limited to collections" in line
    assert not any(s in line + repr(keys) + repr(keys.keys) for s in ("front-secret", "index-secret", "ops-secret"))


def test_a_json_file_is_read_the_same_way(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text('{"keys": [{"name": "a", "key": "json-secret", "scope": "write", "collections": ["x"]}]}')
    key = load_api_keys(str(path)).find("json-secret")
    assert (key.name, key.scope, key.collections) == ("a", Scope.write, frozenset({"x"}))


@pytest.mark.parametrize("body, message", [
    ("keys: []", "non-empty list `keys:`"),
    ("keys: [the-secret-key]", "keys entry 1 is not a mapping"),
    ("keys:\n  - {key: the-secret-key}", "needs a `name`"),
    ("keys:\n  - {name: 'a b', key: the-secret-key}", "needs a `name`"),
    ("keys:\n  - {name: a}", "needs a `key`"),
    ("keys:\n  - {name: a, key: the-secret-key, scope: root}", "scope 'root'; use read, write or admin"),
    ("keys:\n  - {name: a, key: the-secret-key, scopes: admin}", "unknown field(s) ['scopes']"),
    ("keys:\n  - {name: a, key: the-secret-key, collections: x}", "not a non-empty list of names"),
    ("keys:\n  - {name: a, key: the-secret-key, rate: 0}", "`rate` 0"),
    ("keys:\n  - {name: a, key: the-secret-key, burst: 5}", "with a `rate`"),
    ("keys:\n  - {name: a, key: 'sha256:abc'}", "not 64 hex digits"),
    ("keys:\n  - {name: a, key: the-secret-key}\n  - {name: a, key: other-secret-key}", "['a'] are used by more"),
    ("keys:\n  - {name: a, key: the-secret-key}\n  - {name: b, key: the-secret-key}", "'a' and 'b' are the same"),
    ("keys:\n  - {name: a, key: the-secret-key}\nextra: 1", "unknown top-level field(s) ['extra']"),
    ("keys: [{name: a, key: the-secret-key\n", "not valid YAML/JSON at line"),
])
def test_a_bad_key_file_stops_the_start_naming_the_file_and_entry_never_the_key(tmp_path, body, message):
    path = tmp_path / "keys.yaml"
    path.write_text(body)
    with pytest.raises(ValueError) as info:
        load_api_keys(str(path))
    text = str(info.value)
    assert message in text and str(path) in text, text
    assert "the-secret-key" not in text and "other-secret-key" not in text, text
