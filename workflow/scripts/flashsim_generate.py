from pipeline.flashsim.generate import generate_rule
from pipeline.runner import run

run(snakemake, generate_rule)
