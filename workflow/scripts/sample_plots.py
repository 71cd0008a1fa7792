from pathlib import Path

from pipeline.runner import run
from pipeline.samples.plots import sample_plots

run(
    snakemake,
    lambda smk: sample_plots(
        list(smk.input), str(Path(smk.output.summary).parent), smk.wildcards.sample, smk.params.plots
    ),
)
