from pipeline.glue import run
from pipeline.report import collect_plots


def main(smk):
    for stage in ("samples", "flashsim", "calo"):
        collect_plots(smk.params[stage], smk.output[stage])


run(snakemake, main)  # noqa: F821
