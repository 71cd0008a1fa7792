from pipeline.flashsim.validate import validate_rule
from pipeline.runner import run

run(snakemake, validate_rule)
