from pipeline.analysis.fit import fit_rule
from pipeline.runner import run

run(snakemake, fit_rule)
