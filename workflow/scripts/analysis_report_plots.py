from pipeline.analysis.report import collect_plots
from pipeline.runner import run


def body(smk):
    for stage in ("samples", "flashsim", "calo"):
        collect_plots(smk.params[stage], smk.output[stage])


run(snakemake, body)
