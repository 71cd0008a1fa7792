from pipeline.glue import run
from pipeline.report import metrics_tables


def main(smk):
    metrics_tables(dict(smk.input.items()), smk.output[0])


run(snakemake, main)  # noqa: F821
