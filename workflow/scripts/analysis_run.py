from pipeline.analysis.runner import analysis_rule
from pipeline.runner import run

run(snakemake, analysis_rule)
