from pipeline.calo.train import produce_reference
from pipeline.runner import provenance, run
from pipeline.tracking import tracked_run


def main(smk):
    s = smk.wildcards.calo_sample
    with tracked_run(smk.config["mlflow"], "calo", f"calo_reference-{s}", **provenance(smk)) as tr:
        tr.log_metrics(produce_reference(s, smk.params.calo, smk.config["seed"], smk.output.h5, smk.output.xml))


run(snakemake, main)
