from pipeline.analysis.compare import compare_rule
from pipeline.runner import run

run(snakemake, compare_rule)
