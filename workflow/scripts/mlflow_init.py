from pipeline.glue import run
from pipeline.tracking import init_experiments


def main(smk):
    init_experiments(smk.params.mlflow, smk.params.experiments, smk.output[0])


run(snakemake, main)  # noqa: F821
