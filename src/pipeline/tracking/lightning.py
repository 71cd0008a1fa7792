"""Lightning glue of the MLflow store: a logger that writes into an open :class:`TrackedRun`."""

from __future__ import annotations

from typing import Any

from pipeline.tracking.store import TrackedRun, flatten_params


def lightning_logger(tracked: TrackedRun, prefix: str = ""):
    """A Lightning ``MLFlowLogger`` that writes into ``tracked``'s run (per-epoch losses etc.).

    Differences from a plain ``MLFlowLogger(run_id=..., tracking_uri=...)``:

    - every MLflow call is retried like the rest of this module;
    - ``finalize`` (called by ``Trainer.fit``) logs checkpoints if asked but does not close the
      run: :func:`tracked_run` owns its status, and the run stays open for final metrics;
    - ``log_hyperparams`` skips keys already logged (MLflow refuses to change a param's value),
      so ``save_hyperparameters()`` does not clash with the ``params`` of :func:`tracked_run`.

    The logger's ``save_dir`` is ``None`` (not a file store), so ``ModelCheckpoint`` writes under
    ``Trainer(default_root_dir=...)``: set that to a folder of the rule's outputs.
    """
    from lightning.pytorch.loggers import MLFlowLogger
    from lightning.pytorch.utilities import rank_zero_only

    class _ProvenanceMLFlowLogger(MLFlowLogger):
        def __init__(self, tracked_run: TrackedRun, prefix: str):
            super().__init__(
                experiment_name=tracked_run.experiment_name,
                tracking_uri=tracked_run.tracking_uri,
                run_id=tracked_run.run_id,
                prefix=prefix,
            )
            self._mlflow_client = tracked_run.client
            self._tracked = tracked_run

        @rank_zero_only
        def log_hyperparams(self, params: Any) -> None:
            from lightning.fabric.utilities.logger import _convert_params

            params = _convert_params(params) or {}
            existing = self._mlflow_client.get_run(self.run_id).data.params
            flat = {k: v for k, v in flatten_params(params).items() if k not in existing}
            if flat:
                self._tracked.log_params(flat)

        @rank_zero_only
        def finalize(self, status: str = "success") -> None:
            if self._initialized and self._checkpoint_callback:
                self._scan_and_log_checkpoints(self._checkpoint_callback)

    return _ProvenanceMLFlowLogger(tracked, prefix)
