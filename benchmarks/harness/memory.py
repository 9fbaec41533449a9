"""Memory of a server's process tree, each process labelled by its role (psutil).

RSS counts pages shared between processes (the libraries every worker maps) once per process, so the sum over
a tree overstates what the tree takes; PSS splits each shared page between the processes that map it and sums
to the tree's real footprint. Both are recorded (PSS and USS where the kernel exposes smaps).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

# `bentoml serve`'s workers carry `--service-name NAME`; zest's services by their job
ZEST_ROLES = {"zest": "api", "zest-clip-encoder": "encoder", "zest-recommender": "recommender"}


def zest_role(cmdline: list[str], is_root: bool) -> str:
    """'arbiter' for the `bentoml serve` process itself, else the worker's service (api, encoder, recommender),
    with its worker id when there is more than one worker."""
    if "--service-name" in cmdline:
        name = cmdline[cmdline.index("--service-name") + 1]
        worker = cmdline[cmdline.index("--worker-id") + 1] if "--worker-id" in cmdline else "1"
        return ZEST_ROLES.get(name, name) + (f"#{worker}" if worker != "1" else "")
    if is_root:
        return "arbiter"
    return "other:" + (cmdline[0].rsplit("/", 1)[-1] if cmdline else "?")


def plain_role(cmdline: list[str], is_root: bool) -> str:
    return "server" if is_root else "child"


def tree_memory(pid: int, role: Callable[[list[str], bool], str] = plain_role) -> dict[str, Any]:
    """{"processes": [{role, pid, rss_mb, pss_mb, uss_mb}], "total_rss_mb", "total_pss_mb"} of `pid` and its
    descendants; `role(cmdline, is_root)` names each process."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {"processes": [], "total_rss_mb": None, "total_pss_mb": None}
    rows = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            try:
                m = p.memory_full_info()
                pss, uss = getattr(m, "pss", None), getattr(m, "uss", None)
            except psutil.AccessDenied:
                m, pss, uss = p.memory_info(), None, None
            rows.append({"role": role(p.cmdline(), p.pid == pid), "pid": p.pid, "rss_mb": m.rss / 2**20,
                         "pss_mb": pss / 2**20 if pss is not None else None,
                         "uss_mb": uss / 2**20 if uss is not None else None})
    pss_values = [r["pss_mb"] for r in rows]
    return {"processes": rows, "total_rss_mb": sum(r["rss_mb"] for r in rows),
            "total_pss_mb": sum(pss_values) if rows and None not in pss_values else None}
