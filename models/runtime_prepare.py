"""The child process of a first start (models/runtime_child.py): load the model as the server would, make the
exports and, for auto, the whole decision in the cache, and exit. Its own module so that the encoder, which
starts it, and this entry point, which builds an encoder, import each other in one direction only."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path

import torch

from .clip_encoder import ClipEncoder
from .runtime_child import RUNTIMES, is_prepared


def _exit_with_parent(parent: int) -> None:
    """End the child once the server that started it is gone (a stopped start-up leaves no orphan)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, name="zest-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--model-id", help="the id the server's model has (the cache key), if not the spec's")
    parser.add_argument("--runtime", required=True, choices=RUNTIMES)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--parent", type=int)
    args = parser.parse_args(argv)
    if args.parent is not None:
        _exit_with_parent(args.parent)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)  # the server's: the probe times what will serve

    encoder = ClipEncoder.from_spec(args.spec, device="cpu", precision=args.precision, batch_size=args.batch_size)
    encoder.model_id = args.model_id or encoder.model_id
    if is_prepared(encoder, args.runtime, args.cache_dir):
        return 0
    if args.runtime == "auto":  # the whole decision, written to the cache
        encoder.with_runtime("auto", args.cache_dir)
    else:  # the export only: the server gates what it loads
        encoder.converted(args.runtime, args.cache_dir)
    return 0 if is_prepared(encoder, args.runtime, args.cache_dir) else 4


if __name__ == "__main__":
    sys.exit(main())
