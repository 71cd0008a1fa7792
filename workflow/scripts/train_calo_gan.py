from pipeline.calo.train import train_gan, write_metrics
from pipeline.glue import run, tracked


def main(smk):
    cfg = smk.params.calo
    samples = {s: (h5, xml, cfg["samples"][s]["particle"])
               for s, h5, xml in zip(smk.params.samples, smk.input.h5, smk.input.xml)}
    with tracked(smk, "calo", params=cfg["gan"]) as tr:
        write_metrics(smk.output.metrics, train_gan(samples, cfg, smk.config["seed"], smk.output.model,
                                                    smk.output.checkpoints, tracked=tr, threads=smk.threads))


run(snakemake, main)  # noqa: F821
