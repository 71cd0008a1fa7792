"""Reliability: the whole DAG is deterministic, and jobs killed with SIGKILL mid-way leave no final
output and rerun to exactly the outputs of an uninterrupted run.

Determinism: config/tiny.yaml run twice (the session's run in tests/conftest.py and a second one
here, each in its own working directory) gives the same content in every file under results/,
compared by file type with tests/dag_runs.py. Not compared, by design: results/logs and
results/benchmarks (timings), the MLflow store and artifacts (run ids, start times), and the JSON
keys in dag_runs.VOLATILE_JSON_KEYS / VOLATILE_JSON_KEY_PATTERN (durations, run ids).

Bit-identical (measured on two tiny runs): parquet, HDF5, PNG, XML and JSON (apart from the
durations). Equal in content but not in bytes, so compared decoded (exceptions, with the reason):
- ROOT: uproot stamps the write time and a random UUID into the header and keys;
- .pt (torch.save): the zip archive's root folder is named after the temporary file that
  pipeline.io.atomic_output writes to (a random name), e.g. `.jets.pt.1xdqqp5l/data.pkl`;
- .ckpt (Lightning checkpoints): the same, plus the absolute path of the checkpoint directory,
  which contains the run's working directory;
- TorchScript archives (the classifier scorers): compared by code and weights;
- .coffea (analysis outputs): compared by content without their `wall_s`.
Not compared: hls4ml's `hls4ml_config.yml` and `build_lib.sh` (a random library stamp, the
temporary directory the project was written in, the model pickled with memory addresses); the
generated firmware sources next to them are compared byte for byte.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from subprocess import PIPE, Popen

import pytest

from dag_runs import (REPO, assert_same_results, commit_available, compare_file, result_files, run_reference_commit,
                      run_snakemake)

pytestmark = pytest.mark.slow

TINY = str(REPO / "config" / "tiny.yaml")


# The second run is the workflow *as it was at* REFERENCE_COMMIT (its code, rules and tiny config,
# tests/dag_runs.run_reference_commit): the whole tiny DAG of this checkout must give exactly its
# outputs. That proves determinism (two independent runs) and that a change meant to keep the
# numbers (a refactor) kept them. REFERENCE_COMMIT is the last commit whose outputs this code must
# reproduce: f75140d is main before the architecture refactor (issue 14). A change that alters
# outputs on purpose sets it to None (the second run is then this checkout again: determinism
# only), and a later commit pins itself here.
REFERENCE_COMMIT: str | None = "f75140d976930890cd7a62b49e87afbbb996bb2f"
# Outputs moved since REFERENCE_COMMIT (old path prefix under results/ -> new), and outputs that did
# not exist then.
REFERENCE_RENAMES: dict[str, str] = {
    # issue 14: models under results/models/<capability>/, validation under results/validation/<capability>/
    "calo/gan": "models/calo",
    "classifier/model.pt": "models/classifier/model.pt",
    "classifier/model.json": "models/classifier/model.json",
    "classifier/metrics.json": "validation/classifier/metrics.json",
    **{f"classifier/lambda_{t}/{f}": f"models/classifier/lambda_{t}/{f}" for t in ("0", "10") for f in ("scorer.pt", "train.json")},
    **{f"classifier/lambda_{t}/scores.parquet": f"validation/classifier/lambda_{t}/scores.parquet" for t in ("0", "10")},
}
NEW_SINCE_REFERENCE: tuple[str, ...] = (
    # issue 14: training_table writes the per-event fake multiplicities train_flow used to recount
    "training/jets_events.parquet", "training/muons_events.parquet",
)


@pytest.fixture(scope="module")
def second_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny_again")
    t0 = time.perf_counter()
    if REFERENCE_COMMIT is not None and commit_available(REFERENCE_COMMIT):
        run_dir = run_reference_commit(workdir, REFERENCE_COMMIT)
        return run_dir, time.perf_counter() - t0, REFERENCE_COMMIT
    if REFERENCE_COMMIT is not None:  # a shallow clone: determinism only, said loudly
        import warnings

        warnings.warn(f"reference commit {REFERENCE_COMMIT} is not in this clone's history: the tiny DAG "
                      "is compared with a second run of this checkout only", stacklevel=1)
    run_snakemake(workdir, "--configfile", TINY)
    return workdir, time.perf_counter() - t0, None


def test_whole_tiny_dag_is_deterministic_and_reproduces_the_reference(tiny_dag_run, second_run):
    first, second = tiny_dag_run[0] / "results", second_run[0] / "results"
    files = result_files(first)
    kinds = {Path(f).suffix for f in files}
    # the comparison covered the kinds of output the DAG makes
    assert {".root", ".parquet", ".h5", ".json", ".png", ".pt"} <= kinds, kinds
    if second_run[2] is None:
        assert_same_results(first, second, "two runs of config/tiny.yaml with the same seed")
    else:
        assert_same_results(first, second, f"config/tiny.yaml here and at the reference commit {second_run[2]}",
                            renames=REFERENCE_RENAMES, only_in_a=NEW_SINCE_REFERENCE)


# ------------------------------------------------------------------------------------------------
# kill -9 mid-way, then rerun
# ------------------------------------------------------------------------------------------------
def _job_processes(workdir: Path, script: str) -> list[int]:
    """PIDs of the Python processes running workflow/scripts/<script> for ``workdir``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.decode(errors="replace").startswith(f"{workdir}/.snakemake/scripts/")
               and arg.decode(errors="replace").endswith(f".{script}") for arg in cmd):
            pids.append(int(entry.name))
    return pids


def _start(workdir: Path, target: str, configfile: str = TINY) -> Popen:
    import sys

    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--profile", str(REPO / "profiles" / "laptop"), "--cores", "2", target, "--configfile", configfile]
    return Popen(cmd, stdout=PIPE, stderr=PIPE, text=True, start_new_session=True)


def _wait_for(condition, what: str, proc: Popen, timeout: float = 600) -> None:
    t0 = time.time()
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"snakemake ended ({proc.returncode}) before {what}:\n{out[-2000:]}\n{err[-4000:]}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_killed_sample_production_job_reruns_to_the_same_chunk(tmp_path, tiny_dag_run):
    """kill -9 of generate_sample mid-generation: Snakemake fails the job, no chunk file exists,
    and the rerun writes a chunk equal to the uninterrupted run's (the session's tiny run)."""
    target = "results/samples/dy_mumu/chunk0.root"
    log = tmp_path / "results" / "logs" / "generate_sample" / "dy_mumu_chunk0.log"
    proc = _start(tmp_path, target)
    # mid-way: the job has logged the start of generation and is still running
    _wait_for(lambda: log.exists() and "events of" in log.read_text() and _job_processes(tmp_path, "generate_sample.py"),
              "generate_sample started generating", proc)
    assert not (tmp_path / target).exists()
    for pid in _job_processes(tmp_path, "generate_sample.py"):
        os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0, "snakemake must report the killed job"
    assert not (tmp_path / target).exists(), "a killed job left its final output"
    assert not list((tmp_path / "results" / "samples").rglob("*.root"))

    run_snakemake(tmp_path, target, "--rerun-incomplete", "--configfile", TINY)
    assert compare_file(tmp_path / target, tiny_dag_run[0] / target) is None
    assert not list((tmp_path / "results").rglob("*.tmp")), "temporary files left behind"


# The tiny config trains the GAN for 2 epochs of ~0.1 s each: far too short a window to kill it
# "between epochs" reliably. The kill test trains longer (same data, same everything else) and
# compares with an uninterrupted run of that same config.
LONG_GAN_EPOCHS, LONG_GAN_CKPT_EVERY = 100, 10


@pytest.fixture(scope="module")
def long_gan_config(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("long_gan_config") / "tiny_long_gan.yaml"
    path.write_text(f"base: {TINY}\ncalo:\n  gan:\n    epochs: {LONG_GAN_EPOCHS}\n"
                    f"    checkpoint_every_n_epochs: {LONG_GAN_CKPT_EVERY}\n")
    return str(path)


def test_killed_training_run_reruns_to_the_same_model(tmp_path, tmp_path_factory, long_gan_config):
    """kill -9 of the whole Snakemake session (the node is lost) while train_calo_gan is between
    epochs: no model or metrics file exists, Snakemake marks the job incomplete, and after
    `--unlock` the rerun with --rerun-incomplete gives the uninterrupted run's model, metrics and
    checkpoints."""
    outputs = ["results/models/calo/model.pt", "results/models/calo/training.json"]
    reference = tmp_path_factory.mktemp("long_gan_uninterrupted")
    run_snakemake(reference, outputs[0], "--configfile", long_gan_config)

    ckpts = tmp_path / "results" / "models" / "calo" / "checkpoints"
    first_ckpt = f"gan-epoch={LONG_GAN_CKPT_EVERY - 1:03d}*.ckpt"
    proc = _start(tmp_path, outputs[0], long_gan_config)
    # mid-way: the first checkpoint is written, LONG_GAN_EPOCHS - LONG_GAN_CKPT_EVERY epochs to go
    _wait_for(lambda: ckpts.is_dir() and any(ckpts.glob(first_ckpt))
              and _job_processes(tmp_path, "train_calo_gan.py"), "the first checkpoint", proc)
    jobs = _job_processes(tmp_path, "train_calo_gan.py")
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake itself
    for pid in jobs:
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert len(list(ckpts.glob("gan-epoch=*.ckpt"))) < LONG_GAN_EPOCHS // LONG_GAN_CKPT_EVERY, \
        "the training had finished before the kill: the test did not interrupt it"
    for out in outputs:
        assert not (tmp_path / out).exists(), f"the killed training job left {out}"

    # the only thing on disk is the checkpoint folder the job was filling: Snakemake flags it and,
    # without --rerun-incomplete (no profile), refuses to go on
    dry = run_snakemake(tmp_path, outputs[0], "-n", "--configfile", long_gan_config, profile=None, cores=1,
                        check=False)
    dry_out = dry.stdout + dry.stderr
    assert dry.returncode != 0 and "IncompleteFilesException" in dry_out, dry_out[-3000:]
    assert "results/models/calo/checkpoints" in dry_out.split("Incomplete files:")[-1]
    # the killed Snakemake left its lock on the working directory: release it, then rerun
    run_snakemake(tmp_path, "--unlock", "--configfile", long_gan_config)
    run_snakemake(tmp_path, outputs[0], "--rerun-incomplete", "--configfile", long_gan_config)
    for out in outputs:
        assert compare_file(tmp_path / out, reference / out) is None, out
    ref = reference / "results" / "models" / "calo" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == sorted(p.name for p in ref.iterdir())
    for p in ref.iterdir():
        assert compare_file(ckpts / p.name, p) is None, p.name
    assert not list((tmp_path / "results").rglob("*.tmp")), "temporary files left behind"
