from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.classifier.data import classifier_samples
from pipeline.classifier.evaluate import evaluate_classifiers
from pipeline.glue import run, tracked


def main(smk):
    ccfg = smk.config["classifier"]
    scorers = dict(zip(smk.params.tags, smk.input.scorers, strict=True))
    out_dir = str(Path(smk.output.metrics).parent)  # scores: {out_dir}/lambda_{tag}/scores.parquet
    plot_dir = str(Path(smk.output.roc).parent)
    with tracked(smk, "classifier", params=dict(ccfg["evaluation"])) as tr:
        metrics = evaluate_classifiers(dict(smk.params.skims), classifier_samples(smk.config), scorers, ccfg,
                                       smk.config["seed"], out_dir, plot_dir)
        for tag, mt in metrics["lambdas"].items():
            tr.log_metrics({f"lambda_{tag}.{k}": v for k, v in mt.items() if isinstance(v, (int, float))
                            and np.isfinite(v)})
        io.write_json(smk.output.metrics, metrics)
        tr.log_artifact(smk.output.metrics)
        tr.log_artifact(plot_dir, artifact_path="plots")


run(snakemake, main)  # noqa: F821
