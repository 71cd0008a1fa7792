from pipeline.classifier.evaluate import evaluate_rule
from pipeline.runner import run

run(snakemake, evaluate_rule)
