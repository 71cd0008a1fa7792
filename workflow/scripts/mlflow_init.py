from pipeline.runner import run
from pipeline.tracking import init_experiments

run(snakemake, lambda smk: init_experiments(smk.params.mlflow, smk.params.experiments, smk.output[0]))
