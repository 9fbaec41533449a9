"""Command-line options every benchmark shares, and quieter libraries."""

from __future__ import annotations

from pathlib import Path


def add_common_args(ap) -> None:
    """Options every benchmark takes."""
    ap.add_argument("--quick", action="store_true", help="small smoke run (results go to <name>.quick.json)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default: 5, quick: 3)")
    ap.add_argument("--warmup", type=int, default=1, help="unrecorded warm-up rounds")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads in this process (default: torch's own, one per core); the server "
                         "keeps its own default")
    ap.add_argument("--server-root", type=Path, default=None,
                    help="serve from another checkout of zest (default: this one)")
    ap.add_argument("--start-timeout", type=float, default=600, help="seconds to wait for the server to be ready")
    ap.add_argument("--log-dir", type=Path, default=None, help="where server logs go (default: a temp dir)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                    help="where the models run, in process and in the server (cuda: ZEST_DEVICE=cuda, ZEST_GPUS=1, "
                         "ZEST_PRECISION=auto, i.e. bf16/fp16 autocast)")


def device_env(device: str) -> dict[str, str]:
    """The server settings that put zest's encoder on `device`."""
    return {"ZEST_DEVICE": "cuda", "ZEST_GPUS": "1"} if device == "cuda" else {"ZEST_DEVICE": "cpu"}


def quiet_libraries() -> None:
    """No progress bars or per-call warnings from transformers/open_clip in the tables."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("open_clip").setLevel(logging.ERROR)
    logging.getLogger("zest.models.loading").setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def begin(args) -> dict:
    """The start of every in-process benchmark: quiet libraries, torch threads per --threads, and the
    environment record (with a warning if the CPU was busy)."""
    from .environment import env_info, set_threads, warn_if_busy

    quiet_libraries()
    set_threads(args.threads)
    env = env_info()
    warn_if_busy(env)
    return env
