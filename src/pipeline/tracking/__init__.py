"""MLflow tracking: the one place where the pipeline talks to MLflow.

- :mod:`pipeline.tracking.store`     tracking URI, retried client calls, experiments,
  :class:`TrackedRun` and :func:`tracked_run`
- :mod:`pipeline.tracking.lightning` :func:`lightning_logger` (Lightning's ``MLFlowLogger`` into a run)
- :mod:`pipeline.tracking.cli`       ``python -m pipeline.tracking ui|uri --config ...``

The provenance tags themselves (git state, config and input hashes) are built by
:mod:`pipeline.provenance`, which knows nothing of MLflow; the names re-exported from it here
keep ``from pipeline.tracking import config_sha256`` working. ``mlflow`` and ``lightning`` are
imported lazily, so importing this package is cheap.
"""

from pipeline.provenance import canonical_json, config_sha256, git_state
from pipeline.tracking.lightning import lightning_logger
from pipeline.tracking.store import (
    DEFAULT_RETRIES,
    MAX_PARAM_VALUE_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    TrackedRun,
    artifact_location,
    experiment_name,
    flatten_params,
    init_experiments,
    tracked_run,
    tracking_uri,
    with_retries,
)

__all__ = [
    "DEFAULT_RETRIES",
    "MAX_PARAM_VALUE_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "TrackedRun",
    "artifact_location",
    "canonical_json",
    "config_sha256",
    "experiment_name",
    "flatten_params",
    "git_state",
    "init_experiments",
    "lightning_logger",
    "tracked_run",
    "tracking_uri",
    "with_retries",
]
