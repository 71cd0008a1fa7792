from pipeline.calo.train import generate
from pipeline.runner import run

run(snakemake, lambda smk: generate(
    smk.input.model, smk.input.h5, smk.input.xml, smk.params.calo["samples"][smk.wildcards.calo_sample]["particle"],
    smk.params.calo, smk.config["seed"], smk.wildcards.calo_sample, smk.output.h5, smk.output.xml, threads=smk.threads))
