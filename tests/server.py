"""Start the real `bentoml serve` on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`bentoml serve` (or any command that serves zest) on a free loopback port, in its own session.

    `command` replaces the default `python -m bentoml serve TARGET` (it gets `--port PORT` appended), e.g.
    an installed `zest serve`; `cwd` is where it runs (default: this checkout). The benchmarks use it too.
    """

    def __init__(self, env: dict[str, str], log_path: Path, target: str = "zest.service.app:Zest",
                 command: list[str] | None = None, cwd: Path = ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115  (open while the server runs)
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "BENTOML_DO_NOT_TRACK": "True", **env}
        argv = (list(command) if command is not None
                else [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1"])
        self.proc = subprocess.Popen(argv + ["--port", str(self.port)], cwd=cwd, env=full_env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> float:
        """Seconds until /readyz answered 200; raises with the log tail if the server dies or hangs."""
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early (log: {self.log_path}):\n{self.log()}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not ready after {timeout:.0f}s (log: {self.log_path}):\n{self.log()}")

    def log(self, chars: int = 5000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL whatever is left: BentoML's workers run in sessions of their own."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        _, alive = psutil.wait_procs(children, timeout=10)
        for child in alive:
            child.kill()
        self._log.close()


@contextmanager
def serving(srv: Server, timeout: float = 180) -> Iterator[Server]:
    """`srv` once it is ready, stopped again when the block ends, however it ends (a server that never gets
    ready is stopped too)."""
    try:
        srv.wait_ready(timeout)
        yield srv
    finally:
        srv.stop()


@contextmanager
def running_server(tiny_checkpoint: str, rec_model_dir, home: Path, **env: str) -> Iterator[Server]:
    """The real server on the test suite's tiny CLIP and ZESRec models, with its BentoML home, log and (unless
    `ZEST_DATA_DIR` is given) data under `home`, through `serving`: for the length of a `with` block (or of a
    fixture that yields inside one). Two replicas over one store are two of these with the same store."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    with serving(Server({"ZEST_MODEL": f"local-dir:{tiny_checkpoint}", "ZEST_REC_MODEL": str(rec_model_dir),
                         "ZEST_DATA_DIR": str(home / "data"), "BENTOML_HOME": str(home), **env},
                        home / "server.log")) as srv:
        yield srv


@contextmanager
def milvus_lite_server(data_dir: Path, timeout: float = 60) -> Iterator[int]:
    """milvus-lite's gRPC server on a free loopback port, its data and log under `data_dir`, for the length of a
    `with` block: the port once it accepts connections (zest's URI for it is milvus://127.0.0.1:PORT)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with open(data_dir / "milvus.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir / "db"),
                                 "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
        try:
            t0 = time.monotonic()
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"milvus-lite server exited (log: {data_dir / 'milvus.log'})")
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() - t0 > timeout:
                    raise RuntimeError(f"milvus-lite server not listening after {timeout:.0f}s")
                time.sleep(0.2)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
