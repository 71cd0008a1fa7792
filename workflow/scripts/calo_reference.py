from pipeline.calo.train import produce_reference
from pipeline.glue import run, tracked


def main(smk):
    with tracked(smk, "calo") as tr:
        tr.log_metrics(produce_reference(smk.wildcards.calo_sample, smk.params.calo, smk.config["seed"],
                                         smk.output.h5, smk.output.xml))


run(snakemake, main)  # noqa: F821
