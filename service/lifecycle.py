"""BentoML's worker processes as zest sees them: which services have a living worker under our arbiter."""

from __future__ import annotations

import os

import psutil

_WORKER_MODULE = "_bentoml_impl.worker.service"


def _service_name(cmdline: list[str]) -> str | None:
    if _WORKER_MODULE not in cmdline or "--service-name" not in cmdline:
        return None
    i = cmdline.index("--service-name")
    return cmdline[i + 1] if i + 1 < len(cmdline) else None


def sibling_workers(service_name: str) -> list[psutil.Process]:
    """Living BentoML worker processes of `service_name` under this worker's arbiter."""
    try:
        siblings = psutil.Process(os.getppid()).children()
    except psutil.Error:
        return []
    found = []
    for proc in siblings:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and _service_name(proc.cmdline()) == service_name:
                found.append(proc)
        except psutil.Error:
            continue
    return found
