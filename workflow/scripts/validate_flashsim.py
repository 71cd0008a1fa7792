from pipeline.flashsim.validate import validate_flashsim
from pipeline.glue import run, tracked


def main(smk):
    fcfg = smk.config["flashsim"]
    params = {"validation": fcfg["validation"], "holdout_fraction": fcfg["holdout_fraction"],
              "oversampling_k": fcfg["oversampling_k"]}
    with tracked(smk, "flashsim", params=params) as tr:
        validate_flashsim(dict(smk.params.full), dict(smk.params.flash), smk.output.metrics, fcfg,
                          seed=smk.config["seed"], pdf=smk.config["plots"]["samples"]["pdf"], tracked=tr)


run(snakemake, main)  # noqa: F821
