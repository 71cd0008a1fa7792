from pipeline.classifier.export import export_model
from pipeline.glue import run


def main(smk):
    scorers = dict(zip(smk.params.tags, smk.input.scorers, strict=True))
    export_model(scorers, smk.input.metrics, smk.config["classifier"], smk.output.model, smk.output.meta)


run(snakemake, main)  # noqa: F821
