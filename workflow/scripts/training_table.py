from pipeline.flashsim.tables import training_table
from pipeline.glue import run


def main(smk):
    obj = smk.wildcards.object
    training_table(obj, dict(smk.params.files), smk.output.table, smk.params.acceptance, smk.params.chunk_events)


run(snakemake, main)  # noqa: F821
