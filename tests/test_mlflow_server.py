"""MLflow under load in cluster mode: 8 processes log at once to a real `mlflow server`.

tests/test_tracking.py checks the same load (8 processes x 2 runs x 10 metric steps, tags and
params) against the laptop's shared SQLite file; here the identical workers and checks run against
the tracking server that `make mlflow-server` starts and that `mlflow.tracking_uri: http://...`
points a cluster run at (README, SLURM section). Artifacts go to a directory every job can reach,
as on a cluster's shared filesystem.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_tracking import test_concurrent_processes_lose_nothing as check_concurrent_processes_lose_nothing

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{root}/server.db",
         "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield url, root
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_eight_concurrent_jobs_lose_nothing_on_an_mlflow_server(mlflow_server):
    from pipeline.tracking import init_experiments

    url, root = mlflow_server
    cfg = {"tracking_uri": url, "artifact_root": str(root / "artifacts"), "experiment_prefix": "server_",
           "retries": 8}
    ids = init_experiments(cfg, ["concurrency"], str(root / "experiments.json"), workdir=root)
    # the same 8 workers and every assertion of the SQLite test: runs, params, tags, metric histories
    check_concurrent_processes_lose_nothing((cfg, root, ids))
    assert (root / "server.db").stat().st_size > 0, "the runs went to the server's store"
