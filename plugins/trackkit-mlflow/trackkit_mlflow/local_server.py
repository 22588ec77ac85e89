"""An MLflow tracking server on 127.0.0.1, for tests and benchmarks of the tracker against a real one.

    with LocalServer(folder) as server:      # `mlflow server`, SQLite and artifacts in folder
        trackkit.start(["mlflow"], ..., options={"mlflow_tracking_uri": server.url})
        server.kill(); server.start()        # an outage, on the same port and store

``LocalServer(folder, store=URI, ui=True)`` starts ``mlflow ui`` on an existing store instead.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


class LocalServer:
    def __init__(self, folder: Path, store: str | None = None, ui: bool = False, timeout: float = 120.0):
        self.folder, self.timeout = Path(folder), timeout
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        mlflow = str(Path(sys.executable).parent / "mlflow")
        store = store or f"sqlite:///{self.folder / 'mlflow.db'}"
        self.command = [mlflow, "ui" if ui else "server", "--host", "127.0.0.1", "--port", str(self.port),
                        "--workers", "1", "--backend-store-uri", store]
        if not ui:
            self.command += ["--artifacts-destination", (self.folder / "artifacts").as_uri()]
        self.log = self.folder / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it and wait until it answers; RuntimeError with its log's end if it does not."""
        self.folder.mkdir(parents=True, exist_ok=True)
        # No job runners: MLflow 3 starts several (GenAI jobs) that a tracking server does not need,
        # and on a small machine they take the cores from what is being measured.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.log, "ab") as sink:
            # A session of its own, so that stopping it also stops the server's worker processes.
            self.process = subprocess.Popen(self.command, cwd=self.folder, stdout=sink, stderr=subprocess.STDOUT,
                                            start_new_session=True, env=env)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"mlflow did not come up:\n{self.log.read_text()[-3000:]}") from None
                time.sleep(0.3)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop it at once (an outage), or with SIGTERM; a no-op when it is not running."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill(signal.SIGTERM)
