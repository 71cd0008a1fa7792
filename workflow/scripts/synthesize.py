from pipeline.glue import run
from pipeline.trigger.firmware import synthesize


def main(smk):
    synthesize(smk.wildcards.model, smk.input.model, smk.input.metrics, smk.input.project, smk.output[0],
               smk.config["trigger"])


run(snakemake, main)  # noqa: F821
