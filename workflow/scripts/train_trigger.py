from pathlib import Path

from pipeline import io
from pipeline.glue import run, tracked
from pipeline.trigger.model import model_cfg, train_model


def main(smk):
    cfg, name = smk.config, smk.wildcards.model
    params = {"model": name, **model_cfg(cfg["trigger"], name)}
    with tracked(smk, "trigger", params=params) as tr:
        metrics = train_model(name, smk.input.inputs, smk.output.model, cfg["trigger"], cfg["seed"], tracked=tr,
                              progress=True, work_dir=str(Path(smk.output.model).parent))
        tr.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    io.write_json(smk.output.metrics, metrics)


run(snakemake, main)  # noqa: F821
