import logging

from pipeline.flashsim.generate import flash_generate
from pipeline.glue import run

log = logging.getLogger("pipeline")


def main(smk):
    """One input file -> one flash file; the models are keyed by the object their checkpoint stores."""
    stats = flash_generate(smk.wildcards.sample, [smk.input.gen], [smk.output[0]], list(smk.input.models),
                           smk.config["flashsim"], smk.config["seed"])
    log.info("flash_generate %s chunk %s: %s", smk.wildcards.sample, smk.wildcards.chunk, stats)


run(snakemake, main)  # noqa: F821
