from pipeline.calo.train import generate
from pipeline.glue import run


def main(smk):
    sample, cfg = smk.wildcards.calo_sample, smk.params.calo
    generate(smk.input.model, smk.input.h5, smk.input.xml, cfg["samples"][sample]["particle"], cfg,
             smk.config["seed"], sample, smk.output.h5, smk.output.xml, threads=smk.threads)


run(snakemake, main)  # noqa: F821
