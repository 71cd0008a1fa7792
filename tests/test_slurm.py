"""config/tiny.yaml through `profiles/slurm` on a real one-node SLURM cluster on localhost.

The fixture starts the cluster with tools/local-slurm.sh (Debian `slurm-wlm` + `munge`, needs root;
CI runs as root) and fails, saying why, where it cannot. Then the whole tiny DAG runs with
`snakemake --profile profiles/slurm`, exactly as on a cluster, and the tests check that every job
went through sbatch, that the training jobs' GPU request was dropped on a partition without GPUs,
and that the results equal those of the local run of the same config (tests/dag_runs.py).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from dag_runs import assert_same_results, iter_rules_in_log, run_snakemake

pytestmark = pytest.mark.slow

GPU_RULES = ("train_flow", "train_calo_gan")


@pytest.fixture(scope="module")
def local_slurm(repo):
    proc = subprocess.run(["bash", str(repo / "tools" / "local-slurm.sh"), "start"], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail("tools/local-slurm.sh start could not start a local SLURM cluster (needs root and "
                    f"Debian's slurm-wlm + munge):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


@pytest.fixture(scope="module")
def slurm_run(local_slurm, tmp_path_factory, repo):
    workdir = tmp_path_factory.mktemp("tiny_slurm")
    t0 = time.perf_counter()
    proc = run_snakemake(workdir, "--configfile", str(repo / "config" / "tiny.yaml"), profile="slurm",
                         cores=None, timeout=1800)
    return workdir, proc.stdout + proc.stderr, time.perf_counter() - t0


def _slurm_jobs(workdir: Path) -> list[dict]:
    """SLURM's record of the jobs submitted from ``workdir`` (MinJobAge keeps finished ones)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%P|%k|%b|%T|%Z"], capture_output=True,
                         text=True, check=True).stdout
    jobs = []
    for line in out.splitlines():
        jobid, partition, comment, gres, state, wd = line.split("|")
        if Path(wd).resolve() == workdir.resolve():
            jobs.append({"id": jobid, "partition": partition, "comment": comment, "gres": gres, "state": state})
    return jobs


def test_every_job_went_through_sbatch_and_completed(slurm_run):
    workdir, log, seconds = slurm_run
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", log)
    starts = list(iter_rules_in_log(log))  # "rule X:" blocks: one per submission (retries included)
    local = set(iter_rules_in_log(log, local=True))
    # only declared localrules (the `all` target, creating the MLflow experiments) skip sbatch
    assert not local & {"generate_sample", "skim", *GPU_RULES}, local
    assert len(set(starts)) >= 10, f"suspiciously few rules: {starts}"
    assert len(submitted) == len(starts), (len(submitted), len(starts))
    jobs = _slurm_jobs(workdir)
    assert sorted(j["id"] for j in jobs) == sorted(submitted)
    # each DAG job (rule + wildcards) ends with a COMPLETED SLURM job; a retried one may have FAILED before
    last = {}
    for j in sorted(jobs, key=lambda j: int(j["id"])):
        last[j["comment"]] = j
    assert all(j["state"] == "COMPLETED" for j in last.values()), [j for j in last.values() if j["state"] != "COMPLETED"]
    n_retries = log.count("Trying to restart job")
    assert len(last) == len(starts) - n_retries
    # the jobs SLURM ran are the DAG's rules
    assert {re.match(r"rule_(.+?)(_wildcards_.*)?$", c).group(1) for c in last} == set(starts)
    print(f"tiny DAG through SLURM: {len(last)} jobs ({len(jobs)} sbatch submissions) in {seconds:.0f} s")


def test_gpu_request_is_stripped_on_a_partition_without_gpus(slurm_run):
    workdir, log, _ = slurm_run
    from pipeline.cluster import partition_gpus

    partition_gpus.cache_clear()
    assert partition_gpus("gpu") == 0, "the local cluster's gpu partition should advertise no GRES"
    jobs = _slurm_jobs(workdir)
    training = [j for j in jobs if j["comment"].startswith(tuple(f"rule_{r}" for r in GPU_RULES))]
    assert {j["comment"].split("_wildcards_")[0] for j in training} == {f"rule_{r}" for r in GPU_RULES}
    for j in training:
        assert j["partition"] == "gpu", j
        assert j["gres"] in ("N/A", "", "(null)"), j  # no --gpus / --gres reached SLURM
    others = [j for j in jobs if j not in training]
    assert others and all(j["partition"] == "cpu" for j in others)
    # and Snakemake saw the stripped value
    for rule in GPU_RULES:
        block = log[log.index(f"rule {rule}:"):]
        resources = block[block.index("resources:"):].splitlines()[0]
        assert "gpu=0" in resources, resources


def test_slurm_results_equal_the_local_run(slurm_run, tiny_dag_run):
    assert_same_results(tiny_dag_run[0] / "results", slurm_run[0] / "results", "SLURM run vs local run")


def test_mlflow_runs_from_slurm_jobs_are_all_there(slurm_run, tiny_dag_run):
    """Jobs on the cluster logged to the same store: as many finished runs as the local run has."""
    import mlflow

    def runs(workdir):
        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir}/results/mlflow.db")
        out = {}
        for exp in client.search_experiments():
            for r in client.search_runs([exp.experiment_id], max_results=5000):
                key = (exp.name, r.info.run_name)
                out[key] = (r.info.status, sorted(r.data.metrics), sorted(k for k in r.data.tags if not k.startswith("mlflow.")))
        return out

    slurm, local = runs(slurm_run[0]), runs(tiny_dag_run[0])
    assert len(slurm) >= 10
    assert all(status == "FINISHED" for status, _, _ in slurm.values())
    assert sorted(slurm) == sorted(local)
    for key in local:
        assert slurm[key][1] == local[key][1], (key, "metric names differ")
        # host tags differ in content, not in presence
        assert slurm[key][2] == local[key][2], (key, "tag names differ")
