"""`zest store export|import|migrate|backup|restore`: the command line over store/dump.py and store/backup.py.

The store is the one the server uses (ZEST_VECTOR_STORE, ZEST_DATA_DIR, ZEST_MILVUS_TOKEN), or --store /
--data-dir. Export, migrate and backup read an embedded store through a read-only snapshot, so they run on the
data directory of a live server; import and restore into the embedded store want the server stopped (it reads
its store into memory at start).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..store import VectorStore, check_spec, describe, dump, open_store
from ..store import backup as backups
from .settings import Settings


def _store(args: argparse.Namespace) -> tuple[str, str, str]:
    settings = Settings.from_env()
    spec = args.store if args.store is not None else settings.vector_store
    check_spec(spec)
    return spec, args.data_dir or settings.data_dir, settings.milvus_token


def _selection(args: argparse.Namespace) -> dump.Selection:
    return dump.Selection(collection=args.collection, catalog=args.catalog)


@contextmanager
def _bar(total: int, desc: str, quiet: bool) -> Iterator[Callable[[int], object]]:
    from tqdm import tqdm

    with tqdm(total=total, unit="rec", desc=desc, disable=quiet, file=sys.stderr) as bar:
        yield bar.update


def _total(sources: list[tuple[str, dump.Source]], selection: dump.Selection) -> int:
    return sum(src.count(info.name) for _, src, info in dump.selected(sources, selection))


def _report(copied: list[dump.Copied], where: str) -> None:
    for c in copied:
        print(f"{c.role:<12} {c.name:<32} {c.records:>10} records -> {c.count} in {where}")


def _target(spec: str, data_dir: str, token: str) -> Callable[[str], VectorStore]:
    """Opens the target store of a role; an embedded one that a running server has open is refused."""
    def open_role(role: str) -> VectorStore:
        path = backups.store_file(data_dir, role)
        if spec.strip() in ("", "embedded") and path.is_file():
            backups.check_unused(path)
        return open_store(spec, role, data_dir=data_dir, token=token)

    return open_role


def _copy(sources: list[tuple[str, dump.Source]], target: Callable[[str], VectorStore], args: argparse.Namespace,
          where: str, opened: list, verb: str = "import") -> int:
    def open_target(role: str) -> VectorStore:
        store = target(role)
        opened.append(store)
        return store

    selection = _selection(args)
    with _bar(_total(sources, selection), verb, args.quiet) as progress:
        copied = dump.load(sources, open_target, selection, progress=progress)
    _report(copied, where)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    spec, data_dir, token = _store(args)
    sources = dump.store_sources(spec, data_dir, token)
    try:
        selection = _selection(args)
        with _bar(_total(sources, selection), "export", args.quiet) as progress:
            manifest = dump.export(sources, args.dir, selection, source_name=describe(spec),
                                   chunk_rows=args.chunk_rows, progress=progress)
    finally:
        dump.close_all(s for _, s in sources)
    for e in manifest["collections"]:
        print(f"{e['role']:<12} {e['name']:<32} {e['count']:>10} records  model {e['model']}")
    print(f"exported {len(manifest['collections'])} collections to {args.dir}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    spec, data_dir, token = _store(args)
    directory = Path(args.dir)
    if backups.is_backup(directory):
        sources = backups.backup_sources(directory)
    else:
        sources = [(role, dump.DumpReader(directory, role)) for role in dump.ROLE_PREFIXES]
    opened: list = []
    try:
        return _copy(sources, _target(spec, data_dir, token), args, describe(spec), opened)
    finally:
        dump.close_all([s for _, s in sources] + opened)


def cmd_migrate(args: argparse.Namespace) -> int:
    spec, data_dir, token = _store(args)
    check_spec(args.to)
    to_data_dir = args.to_data_dir or data_dir
    embedded = spec.strip() in ("", "embedded")
    if describe(args.to) == describe(spec) and (not embedded or Path(to_data_dir).expanduser().resolve()
                                                == Path(data_dir).expanduser().resolve()):
        print("zest: error: --to names the store being migrated", file=sys.stderr)
        return 2
    sources = dump.store_sources(spec, data_dir, token)
    opened: list = []
    try:
        return _copy(sources, _target(args.to, to_data_dir, token), args, describe(args.to), opened,
                     verb="migrate")
    finally:
        dump.close_all([s for _, s in sources] + opened)


def cmd_backup(args: argparse.Namespace) -> int:
    spec, data_dir, _ = _store(args)
    if spec.strip() not in ("", "embedded"):
        print("zest: error: `zest store backup` backs up the embedded store; back up a Milvus store with Milvus's "
              "own tools, or with `zest store export`", file=sys.stderr)
        return 2
    manifest = backups.backup(data_dir, args.dir)
    for role, entry in manifest["files"].items():
        counts = ", ".join(f"{n} {c}" for n, c in entry["collections"].items()) or "empty"
        print(f"{role:<12} {entry['file']:<28} {entry['bytes']:>12} bytes  ({counts})")
    print(f"backed up {data_dir} to {args.dir} (as of {manifest['started_at']})")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    _, data_dir, _ = _store(args)
    manifest = backups.restore(args.dir, data_dir, force=args.force)
    print(f"restored {', '.join(manifest['files'])} from {args.dir} (taken {manifest['started_at']}) into {data_dir}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="export, import, migrate, back up and restore the vector store",
                       description="Move and protect the data: a portable dump (export/import), a migration to "
                                   "another backend, and an online backup of the embedded store.")
    store = p.add_subparsers(dest="store_command", required=True)

    def common(q: argparse.ArgumentParser, select: bool = False, quiet: bool = False) -> None:
        q.add_argument("--store", default=None, help="the store (default: $ZEST_VECTOR_STORE or embedded)")
        q.add_argument("--data-dir", default=None, help="the embedded store's directory (default: $ZEST_DATA_DIR)")
        if select:
            g = q.add_mutually_exclusive_group()
            g.add_argument("--collection", default=None, help="only this collection (its API name)")
            g.add_argument("--catalog", action="store_true", help="only the recommender's item catalogue")
        if quiet:
            q.add_argument("--quiet", action="store_true", help="no progress bar")

    q = store.add_parser("export", help="write a portable dump (JSONL + .npy + manifest.json) to a new directory")
    q.add_argument("dir")
    q.add_argument("--chunk-rows", type=int, default=dump.CHUNK_ROWS, help="records per chunk file")
    common(q, select=True, quiet=True)
    q.set_defaults(func=cmd_export)

    q = store.add_parser("import", help="load a dump (or a backup) into the store, merging by id")
    q.add_argument("dir")
    common(q, select=True, quiet=True)
    q.set_defaults(func=cmd_import)

    q = store.add_parser("migrate", help="copy the store into another one (e.g. --to milvus://HOST:PORT)")
    q.add_argument("--to", required=True, help="the target store: milvus://HOST:PORT, milvus-lite:DIR, embedded")
    q.add_argument("--to-data-dir", default=None, help="with --to embedded: its data directory")
    common(q, select=True, quiet=True)
    q.set_defaults(func=cmd_migrate)

    q = store.add_parser("backup", help="a consistent online backup of the embedded store (a server may run)")
    q.add_argument("dir")
    common(q)
    q.set_defaults(func=cmd_backup)

    q = store.add_parser("restore", help="put a backup back into a data directory no server is using")
    q.add_argument("dir")
    q.add_argument("--force", action="store_true", help="replace existing store files")
    common(q)
    q.set_defaults(func=cmd_restore)
