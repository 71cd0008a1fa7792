from pathlib import Path

from pipeline import io
from pipeline.runner import provenance, run
from pipeline.tracking import tracked_run
from pipeline.trigger.model import model_cfg, train_model


def main(smk):
    cfg, name = smk.config, smk.wildcards.model
    params = {"model": name, **model_cfg(cfg["trigger"], name)}
    with tracked_run(cfg["mlflow"], "trigger", f"train_trigger {name}", **provenance(smk, params=params)) as tracked:
        metrics = train_model(name, smk.input.inputs, smk.output.model, cfg, tracked=tracked, progress=True,
                              work_dir=str(Path(smk.output.model).parent))
        tracked.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    io.write_json(smk.output.metrics, metrics)


run(snakemake, main)
