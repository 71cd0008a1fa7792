from pathlib import Path

from pipeline import io
from pipeline.classifier.data import classifier_samples
from pipeline.classifier.train import train_classifier
from pipeline.glue import run, tracked


def main(smk):
    ccfg, lam = smk.config["classifier"], float(smk.params.lam)
    params = {**{k: v for k, v in ccfg.items() if k not in ("lambdas", "evaluation")}, "lambda": lam}
    work = Path(smk.output.scorer).parent / ".lightning"
    with tracked(smk, "classifier", params=params) as tr:
        summary = train_classifier(dict(smk.params.skims), classifier_samples(smk.config), lam, smk.output.scorer,
                                   ccfg, smk.config["seed"], tracked=tr, work_dir=str(work))
        tr.log_metrics({"best_val_loss": summary["best_val_loss"], "best_epoch": summary["best_epoch"],
                        "train_time_s": summary["train_time_s"]})
        io.write_json(smk.output.summary, summary)
        tr.log_artifact(smk.output.scorer, artifact_path="model")
        tr.log_artifact(smk.output.summary, artifact_path="model")


run(snakemake, main)  # noqa: F821
