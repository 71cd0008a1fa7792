from pipeline.calo.validate import validate
from pipeline.glue import run, tracked


def main(smk):
    cfg, i = smk.params.calo, smk.input
    samples = {s: (i.ref_h5[k], i.ref_xml[k], i.gen_h5[k], i.gen_xml[k], cfg["samples"][s]["particle"])
               for k, s in enumerate(smk.params.samples)}
    with tracked(smk, "calo") as tr:
        validate(samples, cfg, smk.config["seed"], smk.output.metrics, smk.output.plots, tracked=tr)


run(snakemake, main)  # noqa: F821
