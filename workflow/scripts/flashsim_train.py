from pipeline.flashsim.train import train_rule
from pipeline.runner import run

run(snakemake, train_rule)
