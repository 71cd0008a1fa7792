from pipeline.analysis.report import metrics_tables
from pipeline.runner import run

run(snakemake, lambda smk: metrics_tables(dict(smk.input.items()), smk.output[0]))
