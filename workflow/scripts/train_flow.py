from pathlib import Path

from pipeline import io
from pipeline.flashsim.train import train_object
from pipeline.glue import run, tracked


def main(smk):
    obj = smk.wildcards.object
    cfg = smk.config
    fcfg = cfg["flashsim"]
    params = {k: fcfg[k] for k in ("holdout_fraction", "val_fraction", "oversampling_k")}
    params.update({"model": fcfg[obj], "fakes": fcfg["fakes"]})
    work = Path(smk.output.model).parent / f".{obj}_lightning"
    with tracked(smk, "flashsim", params=params) as tr:
        metrics = train_object(obj, smk.input.table, smk.input.fakes, smk.input.events, smk.output.model, fcfg,
                               seed=cfg["seed"], acceptance=cfg["training_tables"][obj], detector=cfg["detector"],
                               tracked=tr, progress=False, work_dir=str(work))
        tr.log_metrics({f"final_{k}": v for k, v in metrics.items()})
        tr.log_artifact(smk.output.model, artifact_path="model")
        io.write_json(smk.output.metrics, metrics)
        tr.log_artifact(smk.output.metrics, artifact_path="model")


run(snakemake, main)  # noqa: F821
