"""The command line of the MLflow store: ``python -m pipeline.tracking ui|uri --config ...``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.config import load_config
from pipeline.tracking.store import tracking_uri


def main(argv: list[str] | None = None) -> None:
    """``python -m pipeline.tracking ui --config config/config.yaml``: the MLflow UI on the
    pipeline's store (the config's ``mlflow.tracking_uri``), or ``uri`` to print that URI."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.tracking", description=main.__doc__)
    ap.add_argument("command", choices=["ui", "uri"])
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5000)
    args = ap.parse_args(argv)
    uri = tracking_uri(load_config(args.config)["mlflow"])
    if args.command == "uri":
        print(uri)
        return
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin), "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    print(f"MLflow UI on {uri}: http://{args.host}:{args.port}", file=sys.stderr)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
