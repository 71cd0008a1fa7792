"""The MLflow store: tracking URI, retried client calls, experiments, and the tracked run.

Every training and evaluation step runs inside :func:`tracked_run`, which opens an MLflow run
with the provenance tags of :mod:`pipeline.provenance` and closes it as ``FINISHED`` or
``FAILED``::

    with tracked_run(cfg["mlflow"], "flashsim", "train_flow/jet", config=cfg,
                     rule="train_flow", wildcards={"object": obj},
                     inputs={"table": table_path}, seed=seed, params=hparams) as run:
        trainer = Trainer(logger=lightning_logger(run), ...)
        ...
        run.log_metrics({"val_nll": nll})
        run.log_artifact("model.pt", artifact_path="model")

Concurrency. The default store is one SQLite file shared by every job of the DAG. SQLite allows
one writer at a time; MLflow sets a busy timeout, but a transaction that upgrades a read lock to a
write lock fails at once with ``database is locked``. Every MLflow call made here is therefore
retried with exponential backoff and full jitter (``mlflow.retries`` times). The first use of a
new SQLite file runs MLflow's schema migrations (seconds) and creates the default experiment,
which races when many jobs start together: :func:`init_experiments` does it once, before the
fan-out. For clusters, point ``mlflow.tracking_uri`` at an ``mlflow server`` instead.

``mlflow`` is imported lazily, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import ConfigError
from pipeline.io import write_json
from pipeline.provenance import canonical_json, clean_key, provenance_tags

log = logging.getLogger(__name__)

T = TypeVar("T")

# MLflow >= 1.28 accepts 6000 characters per param value (3.x); older servers 500. Use the
# smaller limit so that a run logs the same way against any tracking server.
MAX_PARAM_VALUE_LENGTH = 500
MAX_TAG_VALUE_LENGTH = 5000
_MAX_PARAMS_PER_BATCH = 100  # MLflow's limit for params and tags per log_batch
_MAX_METRICS_PER_BATCH = 1000
_BACKOFF_BASE_S = 0.05
_BACKOFF_CAP_S = 5.0
DEFAULT_RETRIES = 8

_RETRYABLE_MESSAGES = ("database is locked", "database table is locked", "operationalerror",
                       "temporarily_unavailable", "unable to open database file")


# --------------------------------------------------------------------------------------------
# tracking URI and retries
# --------------------------------------------------------------------------------------------
def tracking_uri(mlflow_cfg: Mapping[str, Any], workdir: str | os.PathLike = ".") -> str:
    """The tracking URI of ``mlflow_cfg``, with a relative SQLite path made absolute.

    ``sqlite:///results/mlflow.db`` (relative to ``workdir``) becomes
    ``sqlite:////abs/workdir/results/mlflow.db`` and the folder ``results/`` is created. Absolute
    SQLite paths only get their folder created; other URIs (``http://``, ``postgresql://``,
    ``file:``...) are returned unchanged. A relative ``file:`` store is rejected: it is the
    ``./mlruns`` trap (it depends on the current directory of whoever runs the job).
    """
    try:
        uri = str(mlflow_cfg["tracking_uri"]).strip()
    except KeyError:
        raise ConfigError("mlflow.tracking_uri: missing (e.g. sqlite:///results/mlflow.db)") from None
    if not uri:
        raise ConfigError("mlflow.tracking_uri: empty (e.g. sqlite:///results/mlflow.db)")
    if uri.startswith("sqlite:///"):
        rest = uri[len("sqlite:///"):]
        path_part, sep, query = rest.partition("?")
        if path_part in ("", ":memory:"):
            raise ConfigError(f"mlflow.tracking_uri: {uri!r} is not a file; runs would be lost")
        path = Path(path_part)
        if not path.is_absolute():
            path = Path(workdir).resolve() / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}{sep}{query}"  # path is absolute: sqlite:////abs/...
    if uri.startswith("sqlite:"):
        raise ConfigError(f"mlflow.tracking_uri: {uri!r}: write SQLite URIs as sqlite:///path")
    if uri.startswith("file:") or "://" not in uri:
        local = uri[len("file:"):] if uri.startswith("file:") else uri
        local = local[2:] if local.startswith("//") else local
        if not os.path.isabs(local):
            raise ConfigError(
                f"mlflow.tracking_uri: {uri!r} is a relative file store; use sqlite:///results/mlflow.db"
            )
    return uri


def artifact_location(mlflow_cfg: Mapping[str, Any], experiment: str, workdir: str | os.PathLike = ".") -> str | None:
    """Artifact location (``file://`` URI) for a new experiment: ``<artifact_root>/<experiment>``.

    ``artifact_root`` relative paths are relative to ``workdir``; URIs (``s3://``...) are used as
    given. ``None`` (no ``artifact_root``) lets MLflow choose.
    """
    root = mlflow_cfg.get("artifact_root")
    if not root:
        return None
    root = str(root)
    safe = re.sub(r"[^\w.\-]+", "_", experiment)
    if "://" in root:
        return f"{root.rstrip('/')}/{safe}"
    path = Path(root)
    if not path.is_absolute():
        path = Path(workdir).resolve() / path
    path = path / safe
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def _is_retryable(exc: BaseException) -> bool:
    """True for the transient errors of a shared SQLite store ("database is locked")."""
    try:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException) and exc.error_code == "TEMPORARILY_UNAVAILABLE":
            return True
    except ImportError:  # pragma: no cover - mlflow is a dependency
        pass
    try:
        import sqlalchemy.exc

        if isinstance(exc, sqlalchemy.exc.OperationalError):
            return True
    except ImportError:  # pragma: no cover
        pass
    import sqlite3

    if isinstance(exc, sqlite3.OperationalError):
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(m in text for m in _RETRYABLE_MESSAGES)


def with_retries(fn: Callable[..., T], *args: Any, retries: int = DEFAULT_RETRIES, what: str = "", **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)``, retrying transient store errors with backoff and jitter.

    Attempt ``k`` (0-based) that fails with a retryable error sleeps a uniformly random time in
    ``[0, min(cap, base * 2**k)]`` ("full jitter", so that processes that collided once do not
    collide again). Other errors, and the last retryable one, propagate.
    """
    retries = max(int(retries), 0)
    for attempt in range(retries + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt >= retries or not _is_retryable(exc):
                raise
            delay = random.uniform(0.0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2 ** (attempt + 1)))
            log.info("MLflow %s: %s; retry %d/%d in %.2f s", what or getattr(fn, "__name__", "call"),
                     str(exc).splitlines()[0][:200], attempt + 1, retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


class _RetryingClient:
    """An ``MlflowClient`` whose every method call is retried on transient store errors."""

    def __init__(self, client: Any, retries: int):
        self._client = client
        self._retries = retries

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return with_retries(attr, *args, retries=self._retries, what=name, **kwargs)

        return call


def _retries(mlflow_cfg: Mapping[str, Any]) -> int:
    return int(mlflow_cfg.get("retries", DEFAULT_RETRIES))


def _client(mlflow_cfg: Mapping[str, Any], workdir: str | os.PathLike = ".") -> tuple[_RetryingClient, str]:
    """A retrying ``MlflowClient`` bound to the explicit tracking URI (never the global default)."""
    from mlflow import MlflowClient

    uri = tracking_uri(mlflow_cfg, workdir)
    retries = _retries(mlflow_cfg)
    client = with_retries(MlflowClient, tracking_uri=uri, retries=retries, what="connect")
    return _RetryingClient(client, retries), uri


def experiment_name(mlflow_cfg: Mapping[str, Any], name: str) -> str:
    """The full experiment name: ``mlflow.experiment_prefix`` + ``name``."""
    return f"{mlflow_cfg.get('experiment_prefix') or ''}{name}"


def _get_or_create_experiment(client: _RetryingClient, mlflow_cfg: Mapping[str, Any], name: str,
                              workdir: str | os.PathLike) -> str:
    from mlflow.exceptions import MlflowException

    full = experiment_name(mlflow_cfg, name)
    exp = client.get_experiment_by_name(full)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return client.create_experiment(full, artifact_location=artifact_location(mlflow_cfg, full, workdir))
    except MlflowException as exc:
        # Another job created it between our lookup and our create.
        exp = client.get_experiment_by_name(full)
        if exp is None:
            raise
        log.debug("experiment %s created concurrently (%s)", full, exc.error_code)
        return exp.experiment_id


def init_experiments(mlflow_cfg: Mapping[str, Any], names: list[str], out_json: str | os.PathLike,
                     workdir: str | os.PathLike = ".") -> dict[str, str]:
    """Create the tracking store and the experiments ``names`` before a fan-out of jobs.

    Running this once (a Snakemake rule upstream of every tracked rule) means the SQLite schema
    migrations and experiment creation never race. Existing experiments are reused. Writes
    ``{name: experiment_id}`` (names without ``experiment_prefix``) to ``out_json`` atomically and
    returns it.
    """
    client, _ = _client(mlflow_cfg, workdir)
    ids = {name: _get_or_create_experiment(client, mlflow_cfg, name, workdir) for name in names}
    write_json(out_json, ids)
    return ids


def flatten_params(params: Mapping[str, Any], prefix: str = "",
                   max_len: int = MAX_PARAM_VALUE_LENGTH) -> dict[str, str]:
    """Flatten nested mappings to dotted keys with string values of at most ``max_len`` chars.

    ``{"flow": {"bins": 8, "hidden": [64, 64]}, "lr": 1e-3}`` gives
    ``{"flow.bins": "8", "flow.hidden": "[64, 64]", "lr": "0.001"}``. Lists and tuples are written
    as JSON; ``None`` as ``"None"``; a value longer than ``max_len`` is cut and ends in ``...``.
    """
    out: dict[str, str] = {}
    for key, value in params.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, full, max_len))
            continue
        if isinstance(value, (list, tuple)):
            text = canonical_json(list(value)).replace(",", ", ")
        elif isinstance(value, Mapping):
            text = "{}"
        else:
            text = str(value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value)
        if len(text) > max_len:
            text = text[: max_len - 3] + "..."
        out[clean_key(full)] = text
    return out


# --------------------------------------------------------------------------------------------
# the tracked run
# --------------------------------------------------------------------------------------------
class TrackedRun:
    """An open MLflow run; every call is retried on transient store errors."""

    def __init__(self, client: _RetryingClient, run_id: str, experiment_id: str, tracking_uri: str,
                 experiment_name: str):
        self._client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name

    @property
    def client(self) -> _RetryingClient:
        """The (retrying) ``MlflowClient`` bound to this run's tracking URI."""
        return self._client

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self._client.log_metric(self.run_id, clean_key(key), float(value), step=step or 0)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log several metrics in one transaction (batches of 1000)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(clean_key(k), float(v), ts, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), _MAX_METRICS_PER_BATCH):
            self._client.log_batch(self.run_id, metrics=items[i: i + _MAX_METRICS_PER_BATCH])

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log a (nested) dict of parameters, flattened with :func:`flatten_params`."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten_params(params).items()]
        for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=items[i: i + _MAX_PARAMS_PER_BATCH])

    def set_tag(self, key: str, value: Any) -> None:
        self._client.set_tag(self.run_id, clean_key(key), str(value)[:MAX_TAG_VALUE_LENGTH])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(clean_key(k), str(v)[:MAX_TAG_VALUE_LENGTH]) for k, v in tags.items()]
        for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, tags=items[i: i + _MAX_PARAMS_PER_BATCH])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Copy a file (or a directory, recursively) into the run's artifacts."""
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, obj: Mapping[str, Any] | list, file_name: str) -> None:
        """Write ``obj`` as an artifact (``.json`` or ``.yaml``/``.yml`` by the file name)."""
        self._client.log_dict(self.run_id, obj, file_name)

    def __repr__(self) -> str:
        return f"TrackedRun({self.experiment_name!r}, run_id={self.run_id!r})"


@contextlib.contextmanager
def tracked_run(
    mlflow_cfg: Mapping[str, Any],
    experiment: str,
    run_name: str,
    *,
    config: Mapping[str, Any],
    rule: str,
    wildcards: Mapping[str, Any],
    inputs: Mapping[str, str | os.PathLike | list],
    seed: int | None,
    params: Mapping[str, Any] | None = None,
    workdir: str | os.PathLike = ".",
) -> Iterator[TrackedRun]:
    """Open an MLflow run with the provenance tags; close it FINISHED, or FAILED and re-raise.

    ``experiment`` is the capability name (``mlflow.experiment_prefix`` is prepended; created if
    :func:`init_experiments` did not). ``inputs`` maps names to a file, a directory, or a list of
    them (``dict(snakemake.input.items())``). ``params`` (the hyperparameters) are flattened with
    :func:`flatten_params`. The configuration is logged as the artifact ``config.json``.
    A ``KeyboardInterrupt`` ends the run as ``KILLED``.
    """
    tags = provenance_tags(config=config, rule=rule, wildcards=wildcards, inputs=inputs, seed=seed,
                           workdir=workdir)
    client, uri = _client(mlflow_cfg, workdir)
    exp_id = _get_or_create_experiment(client, mlflow_cfg, experiment, workdir)
    run = client.create_run(exp_id, tags=tags, run_name=run_name)
    tracked = TrackedRun(client, run.info.run_id, exp_id, uri, experiment_name(mlflow_cfg, experiment))
    status = "FAILED"
    try:
        if params:
            tracked.log_params(params)
        tracked.log_dict(json.loads(canonical_json(config)), "config.json")
        yield tracked
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            client.set_terminated(tracked.run_id, status)
        except Exception as exc:  # noqa: BLE001 - never hide the error of the tracked block
            log.error("could not mark MLflow run %s as %s: %s", tracked.run_id, status, exc)
            if status == "FINISHED":
                raise

