from pipeline.classifier.export import export_rule
from pipeline.runner import run

run(snakemake, export_rule)
