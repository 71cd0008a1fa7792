# DisCo-regularised classifiers (src/pipeline/classifier): train_classifier per lambda ->
# evaluate_classifier -> export of the chosen model for the analysis.
from pipeline.classifier.naming import lambda_tag

CLASSIFIER = config["classifier"]
CLASSIFIER_LAMBDAS = {lambda_tag(v): float(v) for v in CLASSIFIER["lambdas"]}
CLASSIFIER_SKIMS = {
    s: f"results/skims/{s}.parquet"
    for s, c in config["samples"].items()
    if c["role"] in ("signal", "background")
}
CLASSIFIER_SCORERS = [f"results/models/classifier/lambda_{t}/scorer.pt" for t in CLASSIFIER_LAMBDAS]


wildcard_constraints:
    lam=r"[0-9][0-9.e+-]*",


rule train_classifier:
    """One DisCo classifier: weighted BCE + lambda * dCor^2(m_mumu, score) on the background;
    TorchScript scorer (input scaling inside) + training summary; MLflow run."""
    input:
        skims=list(CLASSIFIER_SKIMS.values()),
        experiments="results/mlflow/experiments.json",
    output:
        scorer="results/models/classifier/lambda_{lam}/scorer.pt",
        summary="results/models/classifier/lambda_{lam}/train.json",
    params:
        skims=CLASSIFIER_SKIMS,
        lam=lambda w: CLASSIFIER_LAMBDAS[w.lam],
    log:
        "results/logs/train_classifier/lambda_{lam}.log",
    benchmark:
        "results/benchmarks/rules/train_classifier/lambda_{lam}.tsv"
    threads: CLASSIFIER["threads"]
    resources:
        runtime=30,
        mem_mb=2000,
        gpu=0,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/train_classifier.py"


rule evaluate_classifier:
    """Every lambda on the test split: AUC, R50, 1/JSD (pass vs fail at 50 % signal efficiency)
    and its statistical floor, dCor (own weighted and the dcor package); scores and plots."""
    input:
        skims=list(CLASSIFIER_SKIMS.values()),
        scorers=CLASSIFIER_SCORERS,
        experiments="results/mlflow/experiments.json",
    output:
        metrics="results/validation/classifier/metrics.json",
        scores=expand("results/validation/classifier/lambda_{lam}/scores.parquet", lam=CLASSIFIER_LAMBDAS),
        roc=report("results/plots/classifier/roc.png", caption="../report/classifier_plots.rst", category="4 Classifier"),
        plane=report("results/plots/classifier/r50_vs_invjsd.png", caption="../report/classifier_plots.rst",
                     category="4 Classifier"),
        sculpting=report(expand("results/plots/classifier/mmumu_sculpting_lambda_{lam}.png", lam=CLASSIFIER_LAMBDAS),
                         caption="../report/classifier_plots.rst", category="4 Classifier"),
    params:
        skims=CLASSIFIER_SKIMS,
        tags=list(CLASSIFIER_LAMBDAS),
    log:
        "results/logs/evaluate_classifier.log",
    benchmark:
        "results/benchmarks/rules/evaluate_classifier.tsv"
    threads: 1
    resources:
        runtime=20,
        mem_mb=2000,
    conda:
        "../../envs/ml.yaml"
    script:
        "../scripts/evaluate_classifier.py"


rule export_classifier:
    """The scorer of classifier.chosen_lambda as results/models/classifier/model.pt (TorchScript, raw
    event columns in, score out) + model.json (features, threshold at 50 % signal efficiency)."""
    input:
        scorers=CLASSIFIER_SCORERS,
        metrics="results/validation/classifier/metrics.json",
    output:
        model="results/models/classifier/model.pt",
        meta="results/models/classifier/model.json",
    params:
        tags=list(CLASSIFIER_LAMBDAS),
    log:
        "results/logs/export_classifier.log",
    threads: 1
    resources:
        runtime=5,
        mem_mb=1000,
    conda:
        "../../envs/ml.yaml"
    localrule: True
    script:
        "../scripts/export_classifier.py"


CAPABILITY_TARGETS += [
    "results/models/classifier/model.pt",
    "results/models/classifier/model.json",
    "results/validation/classifier/metrics.json",
]
