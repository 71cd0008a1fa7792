from pipeline.analysis.execute import run_analysis
from pipeline.glue import run, tracked


def main(smk):
    cfg = smk.config
    model = getattr(smk.input, "model", None) or None
    model_json = getattr(smk.input, "model_json", None) or None
    sample, simtype = smk.wildcards.sample, smk.wildcards.simtype
    files = list(smk.input.files)
    with tracked(smk, "analysis", params={"analysis": cfg["analysis"], "skim": cfg["skim"]}) as tr:
        res = run_analysis(files, smk.output[0], sample, simtype, cfg["samples"][sample], cfg["analysis"],
                           cfg["skim"], cfg["luminosity_fb"], cfg["seed"], model, model_json)
        metrics = {"n_events": res["n_events"], "norm": res["norm"], "wall_s": res["wall_s"],
                   "events_per_s": res["n_events"] / max(res["wall_s"], 1e-9)}
        for region, y in res["yields"].items():
            metrics[f"yield.{region}"] = y["sumw"]
            metrics[f"yield_err.{region}"] = y["sumw2"] ** 0.5
            metrics[f"events.{region}"] = y["events"]
        for cut, y in res["cutflow"].items():
            metrics[f"cutflow.{cut}"] = y["sumw"]
        tr.log_metrics(metrics)


run(snakemake, main)  # noqa: F821
