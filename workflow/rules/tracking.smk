rule mlflow_init:
    """Create the MLflow store and one experiment per capability before any job logs to it."""
    output:
        "results/mlflow/experiments.json",
    params:
        mlflow=config["mlflow"],
        experiments=EXPERIMENTS,
    log:
        "results/logs/mlflow_init.log",
    conda:
        "../../envs/samples.yaml"
    localrule: True
    script:
        "../scripts/mlflow_init.py"
