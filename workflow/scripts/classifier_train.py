from pipeline.classifier.train import train_rule
from pipeline.runner import run

run(snakemake, train_rule)
