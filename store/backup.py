"""Online backup and restore of the embedded store (`zest store backup` / `restore`).

`backup(data_dir, out)` copies each role's SQLite file (`store-catalog.sqlite3`, `store-collections.sqlite3`)
with SQLite's online backup API (`sqlite3.Connection.backup`) in one step: one read transaction on the live
file, so the copy is the store at one moment -- every write committed before the backup began is in it --
while the server keeps reading and writing (WAL: the backup never blocks the writer). A file copy of a live
store is not consistent; this is. Each copy is checked (`PRAGMA integrity_check`) and listed with its sha256 and
its collections' counts in `backup.json`, written last.

`restore(backup_dir, data_dir)` puts the backup's files back (through the same API), into a data directory that
no server is using -- the embedded store is read into memory at start, so a running server would not see it,
and is detected and refused. A backup is also a source for `zest store import` (any backend, merging by id).
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import time
from pathlib import Path

from .. import __version__
from ..models.errors import Conflict, InvalidInput, NotFound
from . import ROLES
from .dump import Source, _fsync, _sha256
from .embedded import EmbeddedSnapshot

FORMAT = "zest-store-backup"
VERSION = 1
MANIFEST = "backup.json"


def store_file(directory: str | Path, role: str) -> Path:
    return Path(directory).expanduser() / f"store-{role}.sqlite3"


def backup(data_dir: str | Path, out: str | Path) -> dict:
    """Back up the embedded store under `data_dir` into `out` (a new or empty directory); the manifest."""
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise Conflict(f"{out} is not empty: back up into a new directory")
    roles = [r for r in ROLES if store_file(data_dir, r).is_file()]
    if not roles:
        raise NotFound(f"no embedded store under {Path(data_dir).expanduser()} (no store-*.sqlite3)")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    files = {}
    for role in roles:
        dst_path = store_file(out, role)
        src = sqlite3.connect(f"file:{store_file(data_dir, role)}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(dst_path)
        try:
            src.backup(dst)  # pages=-1: the whole file in one step, one read transaction
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            check = dst.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise InvalidInput(f"the backup of {role} failed its integrity check: {check}")
            counts = dict(dst.execute("SELECT collection, count(*) FROM records GROUP BY collection").fetchall())
            names = [r[0] for r in dst.execute("SELECT name FROM collections ORDER BY name")]
        finally:
            dst.close()
            src.close()
        _fsync(dst_path)
        files[role] = {"file": dst_path.name, "sha256": _sha256(dst_path), "bytes": dst_path.stat().st_size,
                       "collections": {n: int(counts.get(n, 0)) for n in names}}
    manifest = {"format": FORMAT, "version": VERSION, "zest_version": __version__,
                "started_at": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(timespec="milliseconds"),
                "source": str(Path(data_dir).expanduser()), "files": files}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    _fsync(tmp)
    tmp.replace(out / MANIFEST)
    return manifest


def read_backup(directory: str | Path, verify: bool = True) -> dict:
    path = Path(directory).expanduser() / MANIFEST
    if not path.is_file():
        raise InvalidInput(f"{path.parent} is not a complete zest backup (no {MANIFEST})")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("version"), int):
        raise InvalidInput(f"{path} is not a {FORMAT} manifest")
    if manifest["version"] > VERSION:
        raise InvalidInput(f"{path.parent} is a backup of format version {manifest['version']}; this zest reads up "
                           f"to {VERSION}")
    for role, entry in manifest["files"].items():
        file = path.parent / entry["file"]
        if role not in ROLES or not file.is_file() or (verify and _sha256(file) != entry["sha256"]):
            raise InvalidInput(f"{file} is missing or damaged (checksum mismatch): the backup is not usable")
    return manifest


def is_backup(directory: str | Path) -> bool:
    return (Path(directory).expanduser() / MANIFEST).is_file()


def backup_sources(directory: str | Path) -> list[tuple[str, Source]]:
    """A backup as (role, source) pairs, for `zest store import`."""
    manifest = read_backup(directory)
    return [(role, EmbeddedSnapshot(Path(directory).expanduser() / e["file"])) for role, e in manifest["files"].items()]


def check_unused(path: Path) -> None:
    """Refuse a store file another connection has open: in WAL mode every connection holds a shared lock on
    the file, so leaving WAL (which needs it alone) fails while a server has it open."""
    db = sqlite3.connect(path, timeout=0.5, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:
        raise Conflict(f"{path} is in use (a zest server is running on this data directory): stop it first; "
                       "the server reads its store into memory when it starts") from None
    finally:
        db.close()


def restore(backup_dir: str | Path, data_dir: str | Path, force: bool = False) -> dict:
    """Replace the embedded store under `data_dir` with the backup; `force` to overwrite existing store files."""
    manifest = read_backup(backup_dir)
    targets = {role: store_file(data_dir, role) for role in manifest["files"]}
    existing = [p for p in targets.values() if p.is_file()]
    if existing and not force:
        raise Conflict(f"{', '.join(map(str, existing))} exist: restoring replaces them (and every write since "
                       "the backup); pass --force, or restore into a new data directory")
    for path in existing:
        check_unused(path)
    Path(data_dir).expanduser().mkdir(parents=True, exist_ok=True)
    for role, entry in manifest["files"].items():
        src = sqlite3.connect(f"file:{Path(backup_dir).expanduser() / entry['file']}?mode=ro", uri=True)
        dst = sqlite3.connect(targets[role], timeout=30)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=WAL")
        finally:
            dst.close()
            src.close()
    return manifest
