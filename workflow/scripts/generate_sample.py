from pipeline.glue import run, tracked
from pipeline.samples.produce import produce_chunk


def main(smk):
    cfg, sample, chunk = smk.config, smk.wildcards.sample, int(smk.wildcards.chunk)
    with tracked(smk, "samples") as tr:
        tr.log_metrics(produce_chunk(sample, chunk, cfg["samples"][sample], cfg["generation"], cfg["detector"],
                                     cfg["seed"], smk.output[0]))


run(snakemake, main)  # noqa: F821
