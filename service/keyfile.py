"""What `ZEST_API_KEYS` names, read into `ApiKey`s: each key's name, scope, collections and rate limit.

Three forms (service/auth.py checks them; README "API keys and scopes" shows them):
- a comma-separated list of keys, or a file (a value starting with `/`, `./`, `../`, `~`) with one key per line
  (`#` comments, blank lines skipped): every key is `admin`, named `key-1`, `key-2`, ... by position;
- a YAML or JSON file (its name ends in `.yaml`, `.yml` or `.json`, or it holds a mapping with `keys:`):
  `keys: [{name, key, scope, collections, rate, burst}]`.
A key may be given as `sha256:<64 hex digits>` (its digest) in any form. Every error names the file and the
entry's name or position, never a key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import yaml


class Scope(IntEnum):
    """What a key may do; each scope includes the ones below it."""

    read = 1   # embed, classify, search, recommend, get, list
    write = 2  # also upsert and delete items and collection items
    admin = 3  # also create and drop collections


@dataclass(frozen=True)
class ApiKey:
    """One configured key. `digest` is SHA-256 of the key; the key itself is not kept."""

    name: str
    digest: bytes
    scope: Scope = Scope.admin
    collections: frozenset[str] | None = None  # None: every collection
    rate: float | None = None  # requests per second (token bucket), None: unlimited
    burst: int | None = None

    def __repr__(self) -> str:
        return f"ApiKey({self.name!r}, {self.scope.name})"


HASHED = re.compile(r"sha256:([0-9a-fA-F]{64})")
FIELDS = {"name", "key", "scope", "collections", "rate", "burst"}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


def digest_of(key: str) -> bytes:
    """The SHA-256 digest a key is compared by: of the key, or the one a `sha256:<hex>` entry gives."""
    hashed = HASHED.fullmatch(key)
    return bytes.fromhex(hashed.group(1)) if hashed else hashlib.sha256(key.encode()).digest()


def is_key_file(raw: str) -> bool:
    return raw.startswith(("/", "./", "../", "~"))


def read_keys(raw: str) -> tuple[list[ApiKey], str]:
    """The keys `raw` (ZEST_API_KEYS) gives and where they came from. Raises ValueError (no key in it)."""
    raw = raw.strip()
    if not is_key_file(raw):
        return _plain([k.strip() for k in raw.split(",") if k.strip()], "ZEST_API_KEYS"), "ZEST_API_KEYS"
    path = Path(raw).expanduser()
    where = f"ZEST_API_KEYS names the key file {str(path)!r}"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}, which cannot be read "
                         f"({type(exc).__name__}: {getattr(exc, 'strerror', None) or 'not text'})") from None
    structured = path.suffix.lower() in (".yaml", ".yml", ".json")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        if structured:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise ValueError(f"{where}, which is not valid YAML/JSON{at}") from None
        doc = None
    if structured or (isinstance(doc, dict) and "keys" in doc):
        return _structured(doc, where), f"the file {path}"
    lines = [line for line in text.splitlines() if not line.strip().startswith("#")]
    keys = [k.strip() for line in lines for k in line.split(",") if k.strip()]
    if not keys:
        raise ValueError(f"{where}, which holds no key: put one key per line, or unset ZEST_API_KEYS to serve "
                         "without keys")
    return _plain(keys, where), f"the file {path}"


def _plain(keys: list[str], where: str) -> list[ApiKey]:
    out = [ApiKey(f"key-{i}", digest_of(k)) for i, k in enumerate(dict.fromkeys(keys), 1)]
    _check_unique(out, where)
    return out


def _structured(doc: Any, where: str) -> list[ApiKey]:
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}, which needs a non-empty list `keys:` of entries "
                         "{name, key, scope, collections, rate, burst}")
    unknown_top = set(doc) - {"keys"}
    if unknown_top:
        raise ValueError(f"{where}: unknown top-level field(s) {sorted(unknown_top)}; only `keys` is read")
    keys = [_entry(e, i, where) for i, e in enumerate(entries, 1)]
    names = [k.name for k in keys]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{where}: the name(s) {dup} are used by more than one key")
    _check_unique(keys, where)
    return keys


def _entry(entry: Any, i: int, where: str) -> ApiKey:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: keys entry {i} is not a mapping {{name, key, scope, ...}}")  # noqa: TRY004
    name = entry.get("name")
    label = f"keys entry {i}" + (f" ({name!r})" if isinstance(name, str) else "")
    unknown = set(entry) - FIELDS
    if unknown:
        raise ValueError(f"{where}: {label} has unknown field(s) {sorted(unknown)}; known: {sorted(FIELDS)}")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"{where}: {label} needs a `name` of 1-64 letters, digits, '_', '.', '@' or '-' (it is "
                         "what the log shows)")
    key = entry.get("key")
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"{where}: {label} needs a `key` (the key, or sha256:<64 hex digits>)")
    key = key.strip()
    if key.lower().startswith("sha256:") and not HASHED.fullmatch(key):
        raise ValueError(f"{where}: {label} has a `key` starting with sha256: that is not 64 hex digits")
    scope = entry.get("scope", "read")
    if scope not in Scope.__members__:
        raise ValueError(f"{where}: {label} has scope {scope!r}; use read, write or admin")
    collections = entry.get("collections")
    if collections is not None:
        if (not isinstance(collections, list) or not collections
                or not all(isinstance(c, str) and c for c in collections)):
            raise ValueError(f"{where}: {label} has `collections` that is not a non-empty list of names")
        collections = frozenset(collections)
    rate, burst = entry.get("rate"), entry.get("burst")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0):
        raise ValueError(f"{where}: {label} has `rate` {rate!r}; give requests per second > 0")
    if burst is not None and (rate is None or isinstance(burst, bool) or not isinstance(burst, int) or burst < 1):
        raise ValueError(f"{where}: {label} has `burst` {burst!r}; give an integer >= 1, with a `rate`")
    if rate is not None and burst is None:
        burst = max(1, int(rate))
    return ApiKey(name, digest_of(key), Scope[scope], collections, float(rate) if rate is not None else None, burst)


def _check_unique(keys: list[ApiKey], where: str) -> None:
    seen: dict[bytes, str] = {}
    for k in keys:
        if k.digest in seen:
            raise ValueError(f"{where}: the keys {seen[k.digest]!r} and {k.name!r} are the same key")
        seen[k.digest] = k.name
