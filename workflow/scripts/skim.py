from pipeline.glue import run
from pipeline.skim import skim_sample


def main(smk):
    skim_sample(list(smk.input), smk.output.skim, smk.output.cutflow, smk.wildcards.sample, smk.params.sample_cfg,
                smk.params.skim, smk.params.luminosity_fb)


run(snakemake, main)  # noqa: F821
