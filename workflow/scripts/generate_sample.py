from pipeline.runner import provenance, run
from pipeline.samples.produce import produce_chunk
from pipeline.tracking import tracked_run


def main(smk):
    sample, chunk = smk.wildcards.sample, int(smk.wildcards.chunk)
    with tracked_run(smk.config["mlflow"], "samples", f"{sample}/chunk{chunk}", **provenance(smk)) as tr:
        tr.log_metrics(produce_chunk(sample, chunk, smk.config, smk.output[0]))


run(snakemake, main)
