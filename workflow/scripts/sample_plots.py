from pathlib import Path

from pipeline.glue import run
from pipeline.samples.plots import sample_plots


def main(smk):
    sample_plots(list(smk.input), str(Path(smk.output.summary).parent), smk.wildcards.sample, smk.params.plots)


run(snakemake, main)  # noqa: F821
