"""pipeline.tracking (and the pipeline.provenance tags it sets) against a real MLflow SQLite store
in a temporary folder."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from pipeline import provenance  # noqa: E402
from pipeline.tracking import store as mlflow_store  # noqa: E402
from pipeline.tracking import (  # noqa: E402
    config_sha256,
    flatten_params,
    init_experiments,
    tracked_run,
    tracking_uri,
)

N_PROCS = 8
RUNS_PER_PROC = 2
METRIC_STEPS = 10


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module: the schema migrations run once (seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    cfg = {
        "tracking_uri": "sqlite:///store/mlflow.db",
        "artifact_root": "store/artifacts",
        "experiment_prefix": "test_",
        "retries": 8,
    }
    ids = init_experiments(cfg, ["provenance", "concurrency"], str(root / "experiments.json"), workdir=root)
    return cfg, root, ids


def _client(cfg, root):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri(cfg, root))


def _kwargs(root, config, inputs, **extra):
    return dict(config=config, rule="train_flow", wildcards={"object": "jet"}, inputs=inputs, seed=7,
                workdir=root, **extra)


def test_tracking_uri_relative_sqlite_is_made_absolute(tmp_path):
    uri = tracking_uri({"tracking_uri": "sqlite:///results/sub/mlflow.db"}, tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/results/sub/mlflow.db"
    assert (tmp_path / "results" / "sub").is_dir()
    assert tracking_uri({"tracking_uri": "http://localhost:5000"}) == "http://localhost:5000"
    absolute = f"sqlite:///{tmp_path}/abs/m.db"
    assert tracking_uri({"tracking_uri": absolute}, "/nonexistent") == absolute
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="relative file store"):
        tracking_uri({"tracking_uri": "mlruns"})
    with pytest.raises(ConfigError, match="tracking_uri"):
        tracking_uri({})


def test_init_experiments_writes_ids_and_is_idempotent(store):
    cfg, root, ids = store
    written = json.loads((root / "experiments.json").read_text())
    assert written == ids and set(ids) == {"provenance", "concurrency"}
    again = init_experiments(cfg, ["provenance", "concurrency"], str(root / "again.json"), workdir=root)
    assert again == ids
    exp = _client(cfg, root).get_experiment(ids["provenance"])
    assert exp.name == "test_provenance"
    assert exp.artifact_location == (root / "store" / "artifacts" / "test_provenance").resolve().as_uri()
    assert not (root / "mlruns").exists() and not Path("mlruns").exists()


def test_tags_params_metrics_artifacts(store, tmp_path):
    cfg, root, ids = store
    data = tmp_path / "table.parquet"
    data.write_bytes(b"some bytes \x00\x01" * 1000)
    parts = [tmp_path / "a.root", tmp_path / "b.root"]
    for i, p in enumerate(parts):
        p.write_bytes(bytes([i]) * 100)
    config = {"seed": 1, "skim": {"muons": {"pt_min_gev": 20.0}}}
    params = {"flow": {"bins": 8, "hidden": [64, 64]}, "lr": 1e-3}
    with tracked_run(cfg, "provenance", "r1", **_kwargs(root, config, {"table": str(data), "parts": parts},
                                                        params=params)) as run:
        run.log_metric("val_nll", 1.5)
        run.log_metrics({"loss": 2.0, "acc": 0.5}, step=3)
        run.log_dict({"auc": 0.9}, "metrics.json")
        run.set_tag("note", "hello")
        plot = tmp_path / "plot.png"
        plot.write_bytes(b"png")
        run.log_artifact(plot, artifact_path="plots")

    c = _client(cfg, root)
    r = c.get_run(run.run_id)
    assert r.info.status == "FINISHED"
    assert r.info.experiment_id == ids["provenance"]
    t = r.data.tags
    assert t["config_sha256"] == config_sha256(config)
    assert t["input_sha256.table"] == hashlib.sha256(data.read_bytes()).hexdigest()
    for i, p in enumerate(parts):
        assert t[f"input_sha256.parts.{i}"] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert t["snakemake_rule"] == "train_flow"
    assert t["wildcard.object"] == "jet"
    assert t["seed"] == "7"
    # the workdir is a temporary directory, but the commit is the code's (the repo this package is in)
    assert t["git_commit"] == provenance.git_state(provenance.CODE_ROOT)[0]
    assert t["note"] == "hello" and t["mlflow.runName"] == "r1"
    assert {"pipeline_version", "host"} <= set(t)
    assert r.data.params == {"flow.bins": "8", "flow.hidden": "[64, 64]", "lr": "0.001"}
    assert r.data.metrics == {"val_nll": 1.5, "loss": 2.0, "acc": 0.5}
    arts = {a.path for a in c.list_artifacts(run.run_id)} | {a.path for a in c.list_artifacts(run.run_id, "plots")}
    assert {"config.json", "metrics.json", "plots/plot.png"} <= arts
    logged_cfg = json.loads(Path(c.download_artifacts(run.run_id, "config.json", str(tmp_path))).read_text())
    assert logged_cfg == config


def test_config_hash_is_order_independent_and_changes_with_config():
    a = {"x": 1, "y": {"b": 2, "a": [1, 2]}}
    b = {"y": {"a": [1, 2], "b": 2}, "x": 1}
    assert config_sha256(a) == config_sha256(b)
    assert config_sha256(a) != config_sha256({**a, "x": 2})
    assert config_sha256(a) != config_sha256({"x": 1, "y": {"b": 2, "a": [2, 1]}})


def test_git_tags_in_a_repository(store, tmp_path, monkeypatch):
    cfg, root, _ = store
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "f.txt").write_text("1")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert provenance.git_state(repo) == (head, "false")
    (repo / "f.txt").write_text("2")
    assert provenance.git_state(repo) == (head, "true")
    # code installed outside any repository: the tags fall back to the workdir's repository
    monkeypatch.setattr(provenance, "CODE_ROOT", tmp_path / "not_a_repo")
    # workdir is the git repo here, so give the store as absolute paths
    abs_cfg = {**cfg, "tracking_uri": tracking_uri(cfg, root), "artifact_root": str(root / "store" / "artifacts")}
    with tracked_run(abs_cfg, "provenance", "git", config={}, rule="r", wildcards={}, inputs={}, seed=None,
                     workdir=repo) as run:
        pass
    t = _client(cfg, root).get_run(run.run_id).data.tags
    assert t["git_commit"] == head and t["git_dirty"] == "true" and t["seed"] == "None"


def test_failed_block_marks_run_failed_and_reraises(store):
    cfg, root, _ = store

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom, match="diverged"):
        with tracked_run(cfg, "provenance", "fails", **_kwargs(root, {}, {})) as run:
            run.log_metric("loss", 3.0)
            raise Boom("training diverged")
    r = _client(cfg, root).get_run(run.run_id)
    assert r.info.status == "FAILED"
    assert r.data.metrics == {"loss": 3.0}


def test_missing_input_is_a_clear_error(store, tmp_path):
    cfg, root, _ = store
    from pipeline.errors import InputFileError

    with pytest.raises(InputFileError, match="nope.root.*'table'"):
        with tracked_run(cfg, "provenance", "x", **_kwargs(root, {}, {"table": str(tmp_path / "nope.root")})):
            pass


def test_flatten_params():
    flat = flatten_params({
        "a": {"b": {"c": 1}, "d": [1, 2.5, "x"], "e": None},
        "f": "v" * 1000,
        "g": True,
        "h": {},
        "bad key!": 1,
    })
    assert flat["a.b.c"] == "1"
    assert flat["a.d"] == '[1, 2.5, "x"]'
    assert flat["a.e"] == "None"
    assert flat["g"] == "True"
    assert flat["h"] == "{}"
    assert flat["bad key_"] == "1"
    assert len(flat["f"]) == mlflow_store.MAX_PARAM_VALUE_LENGTH and flat["f"].endswith("...")
    import numpy as np

    assert flatten_params({"x": np.float32(0.5), "n": np.int64(3)}) == {"x": "0.5", "n": "3"}


def test_retry_on_database_locked(monkeypatch):
    import sqlite3

    monkeypatch.setattr(mlflow_store, "_BACKOFF_BASE_S", 0.001)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "ok"

    assert mlflow_store.with_retries(flaky, retries=3) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(sqlite3.OperationalError):
        mlflow_store.with_retries(flaky, retries=1)
    with pytest.raises(ValueError):  # not a store error: no retry
        mlflow_store.with_retries(lambda: (_ for _ in ()).throw(ValueError("bad")), retries=5)


def _worker(cfg, root, proc, barrier):
    """One Snakemake job: wait for all, then log runs with tags, params and metrics."""
    mlflow_store._client(cfg, root)  # import MLflow and open the store first, so that the writes overlap
    barrier.wait()
    for k in range(RUNS_PER_PROC):
        with tracked_run(cfg, "concurrency", f"p{proc}-r{k}", config={"proc": proc}, rule="fanout",
                         wildcards={"proc": proc, "k": k}, inputs={}, seed=proc * 100 + k, workdir=root,
                         params={"proc": proc, "k": k}) as run:
            for step in range(METRIC_STEPS):
                run.log_metric("loss", float(step), step=step)
            run.log_metrics({"final": float(proc), "k": float(k)})
            run.set_tag("done", "yes")


def test_concurrent_processes_lose_nothing(store):
    cfg, root, ids = store
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(N_PROCS)
    procs = [ctx.Process(target=_worker, args=(cfg, str(root), i, barrier)) for i in range(N_PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * N_PROCS

    c = _client(cfg, root)
    runs = c.search_runs([ids["concurrency"]], max_results=1000)
    assert len(runs) == N_PROCS * RUNS_PER_PROC
    seen = set()
    for r in runs:
        t = r.data.tags
        proc, k = int(t["wildcard.proc"]), int(t["wildcard.k"])
        seen.add((proc, k))
        assert r.info.status == "FINISHED"
        assert t["done"] == "yes" and t["seed"] == str(proc * 100 + k)
        assert t["config_sha256"] == config_sha256({"proc": proc})
        assert r.data.params == {"proc": str(proc), "k": str(k)}
        assert r.data.metrics == {"loss": METRIC_STEPS - 1.0, "final": float(proc), "k": float(k)}
        history = c.get_metric_history(r.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in history) == [(s, float(s)) for s in range(METRIC_STEPS)]
    assert seen == {(p, k) for p in range(N_PROCS) for k in range(RUNS_PER_PROC)}


def test_lightning_logger_writes_into_the_run(store):
    pytest.importorskip("lightning")
    cfg, root, _ = store
    from pipeline.tracking import lightning_logger

    with tracked_run(cfg, "provenance", "lightning", **_kwargs(root, {}, {}, params={"lr": 0.01})) as run:
        logger = lightning_logger(run)
        assert logger.run_id == run.run_id
        for epoch in range(3):
            logger.log_metrics({"train_loss": 1.0 / (epoch + 1)}, step=epoch)
        logger.log_hyperparams({"lr": 0.01, "model": {"bins": 8}})  # lr already logged: no clash
        logger.finalize("success")
        c = _client(cfg, root)
        assert c.get_run(run.run_id).info.status == "RUNNING"  # tracked_run owns the status
        run.log_metric("val_nll", 0.1)
    r = c.get_run(run.run_id)
    assert r.info.status == "FINISHED"
    assert r.data.params == {"lr": "0.01", "model.bins": "8"}
    assert [m.value for m in sorted(c.get_metric_history(run.run_id, "train_loss"), key=lambda m: m.step)] == [
        1.0, 0.5, pytest.approx(1 / 3)]
    assert r.data.metrics["val_nll"] == 0.1


def test_real_locked_errors_are_retryable(tmp_path):
    """The exceptions a locked SQLite store really raises (raw, SQLAlchemy, MLflow-wrapped)."""
    import sqlite3

    import sqlalchemy
    from mlflow.exceptions import MlflowException

    db = tmp_path / "x.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("create table t (x int)")
    holder.execute("begin exclusive")
    engine = sqlalchemy.create_engine(f"sqlite:///{db}", connect_args={"timeout": 0})
    with pytest.raises(sqlalchemy.exc.OperationalError, match="database is locked") as info:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("insert into t values (1)"))
    holder.rollback()
    holder.close()
    engine.dispose()
    assert mlflow_store._is_retryable(info.value)
    assert mlflow_store._is_retryable(info.value.orig)
    # what MLflow's SqlAlchemyStore turns an OperationalError into
    assert mlflow_store._is_retryable(MlflowException(message=info.value, error_code="TEMPORARILY_UNAVAILABLE"))
    assert not mlflow_store._is_retryable(MlflowException("Run 'x' not found", error_code="RESOURCE_DOES_NOT_EXIST"))
