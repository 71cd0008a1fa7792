from pipeline.runner import run
from pipeline.skim import training_table

run(
    snakemake,
    lambda smk: training_table(smk.wildcards.object, smk.params.files, smk.output.table, smk.config),
)
