"""Training jobs without the trainer: experiment checks, resume, results import and deletion.

The queue, the reconciler, GPU discovery and Slurm states are in test_train_jobs_queue.py; real trainer runs
(local, torchrun, Slurm) in test_train_jobs_runs.py.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import socket
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from annotations.db import write_session
from annotations.importer import import_dataset
from annotations.models import Experiment, Item, Score, ScoreSet, TrainRun, TriageDecision, utcnow
from annotations.review import set_gold
from annotations.users import create_user
from cftclip_core.errors import CftClipError, ConfigError
from cftclip_core.formats import read_table, write_table
from cftclip_core.synthetic import WorldConfig, generate_dataset
from tests.train_jobs_helpers import CONFIG, CPU_ONLY, TWO_GPUS, make_dataset, nothing_created, request
from train_jobs import runfiles, states
from train_jobs.api import (
    ExperimentError,
    can_resume,
    create_experiment,
    create_proof_experiment,
    delete_experiment,
    experiment_runs,
    import_results,
    results_row,
    resume_run,
)


@pytest.fixture
def dataset(factory, instance, tmp_path: Path) -> int:  # noqa: ANN001
    """The 24-item synthetic set (19 train, 3 val, 2 test; labelled) imported into the database."""
    return make_dataset(factory, instance, tmp_path)


# --- experiments ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("config", "field"), [
    ({"lr": "fast"}, "lr="),
    ({"batch_size": 1}, "batch_size="),
    ({"loss": "triplet"}, "loss="),
    ({"batch_sise": 8}, "batch_sise"),
    ({"seed": 3}, "seed is set per run"),
    ({"batch_size": 64}, "batch_size=64 is larger than the 19 training item(s)"),
    ({"freeze_text_layers": 11}, "freeze_text_layers=11 is not valid: the model's text tower has only 2"),
])
def test_invalid_hyperparameters_are_refused_naming_the_field_before_anything_is_written(
        factory, instance, dataset: int, config: dict, field: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=field.replace("(", r"\(").replace(")", r"\)")):
        create_experiment(factory, instance, request(dataset, config={**CONFIG, **config}), inventory=CPU_ONLY)
    assert nothing_created(factory, instance)


@pytest.mark.parametrize(("changes", "message"), [
    ({"seeds": ()}, "at least one seed"),
    ({"seeds": (0, 0)}, "repeat a seed"),
    ({"seeds": (-1,)}, "integer from 0 to"),
    ({"seeds": (10**23,)}, "integer from 0 to"),  # raised OverflowError in the database before
    ({"backend": "kubernetes"}, "backend='kubernetes' is not known"),
    ({"backend": "local", "gpus_per_run": 2}, "choose torchrun"),
    ({"gpus_per_run": 1}, "this machine has 0.*CPU only"),
    ({"backend": "torchrun", "gpus_per_run": 4}, "asks for 4 GPU\\(s\\), but this machine has 2"),
    ({"threshold": "best"}, "threshold='best' is not valid"),
    ({"name": " "}, "needs a name"),
])
def test_bad_seeds_backends_and_absent_gpus_are_refused(factory, instance, dataset: int, changes: dict,
                                                        message: str) -> None:  # noqa: ANN001
    inventory = TWO_GPUS if changes.get("backend") == "torchrun" else CPU_ONLY
    with pytest.raises(CftClipError, match=message):
        create_experiment(factory, instance, request(dataset, **changes), inventory=inventory)
    assert nothing_created(factory, instance)


def test_evaluation_dataset_without_labels_is_refused(factory, instance, dataset: int, tmp_path: Path) -> None:  # noqa: ANN001
    table = read_table(generate_dataset(tmp_path / "unlabelled", 6, WorldConfig(image_size=64), seed=1))
    unlabelled = write_table([dataclasses.replace(r, label=None) for r in table.records],
                             tmp_path / "unlabelled" / "nolabels.csv")
    eval_id = import_dataset(factory, instance, read_table(unlabelled), "no-labels").id
    with pytest.raises(ExperimentError, match="'no-labels' has no labels to evaluate against"):
        create_experiment(factory, instance, request(dataset, eval_dataset_id=eval_id), inventory=CPU_ONLY)
    assert nothing_created(factory, instance)


def test_training_data_without_a_val_split_or_without_counterfactuals_is_refused(
        factory, instance, dataset: int, tmp_path: Path) -> None:  # noqa: ANN001
    table = read_table(generate_dataset(tmp_path / "flat", 8, WorldConfig(image_size=64), seed=2))
    flat = write_table([dataclasses.replace(r, split=None) for r in table.records], tmp_path / "flat" / "f.csv")
    flat_id = import_dataset(factory, instance, read_table(flat), "flat").id
    with pytest.raises(ExperimentError, match="'flat' has no items with split 'train'"):
        create_experiment(factory, instance, request(flat_id), inventory=CPU_ONLY)
    with pytest.raises(ExperimentError, match="no counterfactual texts, and the loss 'cft' needs them"):
        create_experiment(factory, instance, request(dataset, config={**CONFIG, "loss": "cft"}), inventory=CPU_ONLY)
    assert nothing_created(factory, instance)


def test_the_thresholds_source_is_checked_recorded_and_passed_to_the_run(
        factory, instance, dataset: int, tmp_path: Path) -> None:  # noqa: ANN001
    table = read_table(generate_dataset(tmp_path / "noval", 8, WorldConfig(image_size=64), seed=3))
    no_val = write_table([dataclasses.replace(r, split="test") for r in table.records], tmp_path / "noval" / "t.csv")
    no_val_id = import_dataset(factory, instance, read_table(no_val), "no-val").id
    with pytest.raises(ExperimentError, match="'no-val' has none. Take the threshold from the training run's"):
        create_experiment(factory, instance, request(dataset, eval_dataset_id=no_val_id, threshold_from="eval-val"),
                          inventory=CPU_ONLY)
    with pytest.raises(ConfigError, match="threshold_from='eval-val' contradicts replicate_original"):
        create_experiment(factory, instance, request(dataset, eval_dataset_id=no_val_id, threshold_from="eval-val",
                                                     config={**CONFIG, "replicate_original": True}),
                          inventory=CPU_ONLY)
    with pytest.raises(ExperimentError, match="'no-val' has none"):  # f1-optimal looks in eval-val by default
        create_experiment(factory, instance, request(dataset, eval_dataset_id=no_val_id, threshold="f1-optimal"),
                          inventory=CPU_ONLY)
    assert nothing_created(factory, instance)
    tuned = create_experiment(factory, instance, request(dataset, name="tuned", eval_dataset_id=no_val_id,
                                                         threshold="f1-optimal", threshold_from="train-val"),
                              inventory=CPU_ONLY)  # the synthetic training set's val rows are labelled
    median = create_experiment(factory, instance, request(dataset, name="median", eval_dataset_id=no_val_id),
                               inventory=CPU_ONLY)
    for experiment, expected in ((tuned, {"threshold": "f1-optimal", "threshold_from": "train-val"}),
                                 (median, {"threshold": "val-median", "threshold_from": "train-val"})):
        assert experiment.options == expected
        with factory() as session:
            [run] = experiment_runs(session, experiment.id)
        assert run.command[run.command.index("--threshold-from") + 1] == "train-val"


def test_a_full_disk_while_exporting_leaves_nothing_behind(factory, instance, dataset: int,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    def full(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("train_jobs.experiments.export_dataset", full)
    with pytest.raises(ExperimentError, match="No space left on device. Free disk space there"):
        create_experiment(factory, instance, request(dataset), inventory=CPU_ONLY)
    assert nothing_created(factory, instance)


def test_experiment_exports_gold_labels_and_queues_one_run_per_seed_with_provenance(
        factory, instance, dataset: int) -> None:  # noqa: ANN001
    researcher = create_user(factory, "rita", "correct horse battery", "researcher")
    with factory() as session:
        item = session.scalars(select(Item).where(Item.dataset_id == dataset, Item.split == "test")).first()
    flipped = 1 - item.source_label
    set_gold(factory, item.id, flipped, "checked the photo", researcher.id)
    experiment = create_experiment(factory, instance, request(dataset, eval_dataset_id=dataset, seeds=(0, 1, 2)),
                                   user_id=researcher.id, inventory=CPU_ONLY)
    folder = Path(experiment.folder)
    assert folder.parent == instance.instance_dir / "runs"
    train, val, evaluation = (pd.read_csv(folder / "data" / f"{n}.csv", dtype=str, keep_default_na=False)
                              for n in ("train", "val", "eval"))
    assert (len(train), len(val), len(evaluation)) == (19, 3, 24)
    assert set(train["split"]) == {"train"} and set(val["split"]) == {"val"}
    assert evaluation.set_index("id").loc[item.external_id, "label"] == str(flipped)  # the gold label, not the file's
    assert json.loads((folder / "config.json").read_text()) == CONFIG
    with factory() as session:
        runs = experiment_runs(session, experiment.id)
    assert [r.seed for r in runs] == [0, 1, 2] and {r.state for r in runs} == {"queued"}
    assert {r.config_hash for r in runs} == {experiment.config_hash}
    assert [r.config["seed"] for r in runs] == [0, 1, 2]
    first = runs[0]
    assert first.command[:4] == ["python", "-m", "cftclip_core", "train"]
    assert first.command[first.command.index("--seed") + 1] == "0"
    assert first.command[first.command.index("--out") + 1] == first.run_dir == str(folder / "seed-0")
    assert first.command[first.command.index("--eval") + 1] == str(folder / "data" / "eval.csv")
    assert first.created_by == researcher.id and first.package_versions["torch"]
    assert first.code_version and len(first.label_snapshot) == 64
    # Another gold decision: the next experiment records a different label snapshot.
    set_gold(factory, item.id, 1 - flipped, "looked again", researcher.id)
    again = create_experiment(factory, instance, request(dataset, name="exp2", eval_dataset_id=dataset),
                              inventory=CPU_ONLY)
    with factory() as session:
        assert experiment_runs(session, again.id)[0].label_snapshot != first.label_snapshot
    with pytest.raises(ExperimentError, match="already exists"):
        create_experiment(factory, instance, request(dataset), inventory=CPU_ONLY)


def test_proof_experiment_runs_the_proof_command(factory, instance) -> None:  # noqa: ANN001
    experiment = create_proof_experiment(factory, instance, name="proof demo", seeds=(0, 1), inventory=CPU_ONLY)
    with factory() as session:
        runs = experiment_runs(session, experiment.id)
    assert runs[1].command == ["python", "-m", "cftclip_core.proof", "run", "--world", "many", "--arm", "cft",
                               "--seed", "1", "--out", runs[1].run_dir, "--cache",
                               str(instance.cache_dir / "proof")]
    with pytest.raises(ConfigError, match="proof option arm"):
        create_proof_experiment(factory, instance, name="bad", arm="cft; rm -rf /", inventory=CPU_ONLY)


def end_run(factory, run_id: int, state: str, exit_code: int = 143, host: str | None = None) -> TrainRun:  # noqa: ANN001
    with write_session(factory) as session:
        run = session.get(TrainRun, run_id)
        run.state, run.exit_code, run.host, run.finished_at = state, exit_code, host, utcnow()
        return run


def current_state(factory, run_id: int) -> str:  # noqa: ANN001
    with factory() as session:
        return session.get(TrainRun, run_id).state


def test_resume_is_refused_with_the_reason_and_changes_nothing(factory, instance, dataset: int) -> None:  # noqa: ANN001
    experiment = create_experiment(factory, instance, request(dataset), inventory=CPU_ONLY)
    with factory() as session:
        run = experiment_runs(session, experiment.id)[0]
    with pytest.raises(CftClipError, match="is queued; only a failed or cancelled run"):
        resume_run(factory, run.id, None)
    end_run(factory, run.id, "lost")
    with pytest.raises(CftClipError, match="Cancel it first"):
        resume_run(factory, run.id, None)
    run = end_run(factory, run.id, "cancelled")
    with pytest.raises(CftClipError, match="saved no resumable checkpoint"):
        resume_run(factory, run.id, None)
    last = Path(run.run_dir) / runfiles.LAST
    last.mkdir(parents=True)
    (last / "trainer_state.pt").write_bytes(b"saved")
    end_run(factory, run.id, "failed", exit_code=2)  # a NaN loss or a refused config
    with pytest.raises(CftClipError, match="would fail the same way"):
        resume_run(factory, run.id, None)
    end_run(factory, run.id, "cancelled", host="another-machine")
    with pytest.raises(CftClipError, match="ran on another-machine, not on this machine"):
        resume_run(factory, run.id, None)
    assert current_state(factory, run.id) == "cancelled" and not can_resume(current(factory, run.id))

    proof = create_proof_experiment(factory, instance, name="proof", seeds=(0,), inventory=CPU_ONLY)
    with factory() as session:
        proof_run = experiment_runs(session, proof.id)[0]
    Path(proof_run.run_dir, runfiles.LAST).mkdir(parents=True)  # the proof trains into its run folder too
    Path(proof_run.run_dir, runfiles.LAST, "trainer_state.pt").write_bytes(b"saved")
    proof_run = end_run(factory, proof_run.id, "cancelled")
    assert not can_resume(proof_run)
    with pytest.raises(CftClipError, match="synthetic-proof run"):
        resume_run(factory, proof_run.id, None)


def test_resume_sets_the_stopped_attempt_aside_and_queues_the_run_with_resume(
        factory, instance, dataset: int, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    experiment = create_experiment(factory, instance, request(dataset), inventory=CPU_ONLY)
    with factory() as session:
        run = experiment_runs(session, experiment.id)[0]
    run_dir = Path(run.run_dir)
    (run_dir / runfiles.LAST).mkdir(parents=True)
    (run_dir / runfiles.LAST / "trainer_state.pt").write_bytes(b"saved")
    outcomes = (runfiles.EXIT, runfiles.HEARTBEAT, runfiles.METRICS, runfiles.EVAL_METRICS)
    for name in outcomes:
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("{}")
    Path(run.log_path).write_text("Traceback (most recent call last):\nRuntimeError: the stopped attempt's\n")
    run = end_run(factory, run.id, "cancelled", host=socket.gethostname())
    assert can_resume(run)

    def refused(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        raise RuntimeError("the database refused")
    with monkeypatch.context() as patch:
        patch.setattr("train_jobs.resume.states.move", refused)
        with pytest.raises(RuntimeError):
            resume_run(factory, run.id, None)
    assert current_state(factory, run.id) == "cancelled"
    assert all((run_dir / name).is_file() for name in outcomes)  # put back: nothing changed half-way

    assert "queued again" in resume_run(factory, run.id, None)
    resumed = current(factory, run.id)
    assert (resumed.state, resumed.exit_code, resumed.host, resumed.command[-1]) == ("queued", None, None, "--resume")
    assert "resumed by the command line" in resumed.reason
    assert not any((run_dir / name).exists() for name in outcomes)
    assert all((run_dir / "stopped-attempt" / name).is_file() for name in outcomes)
    assert (run_dir / runfiles.LAST / "trainer_state.pt").is_file()
    assert runfiles.last_error_line(run.log_path) == ""  # the stopped attempt's error is not the new one's
    with open(run.log_path, "a") as log:
        log.write("error: the new attempt's\n")
    assert runfiles.last_error_line(run.log_path) == "error: the new attempt's"


def current(factory, run_id: int) -> TrainRun:  # noqa: ANN001
    with factory() as session:
        return session.get(TrainRun, run_id)



# --- results -------------------------------------------------------------------------------------------
def finished_run(factory, instance, dataset: int) -> TrainRun:  # noqa: ANN001
    """A run marked succeeded whose folder holds what the trainer leaves (run folder contract)."""
    experiment = create_experiment(factory, instance, request(dataset, eval_dataset_id=dataset), inventory=CPU_ONLY)
    with write_session(factory) as session:
        run = experiment_runs(session, experiment.id)[0]
        for state in (states.STARTING, states.RUNNING, states.SUCCEEDED):
            states.move(run, state)
    run_dir = Path(run.run_dir)
    (run_dir / "best").mkdir(parents=True)
    (run_dir / "best" / "cftclip_tiny.json").write_text("{}")
    (run_dir / "eval").mkdir()
    (run_dir / "metrics.json").write_text(json.dumps({"best_step": 2, "best_val_loss": 1.5, "steps": 2}))
    (run_dir / "eval" / "metrics.json").write_text(json.dumps({"threshold": {"value": 0.1},
                                                               "metrics": {"f1": {"value": 0.5}}}))
    frame = pd.read_csv(Path(experiment.folder) / "data" / "eval.csv", dtype=str, keep_default_na=False)
    pd.DataFrame({"id": frame["id"], "split": frame["split"], "label": frame["label"],
                  "similarity": [0.01 * i for i in range(len(frame))], "truncated": False,
                  "model_fingerprint": "sha256:abc", "text_field": "summary"}).to_csv(run_dir / "eval" / "scores.csv",
                                                                                      index=False)
    return run


def test_results_of_a_finished_run_are_imported_with_its_scores_as_a_linked_score_set(
        factory, instance, dataset: int) -> None:  # noqa: ANN001
    run = import_results(factory, finished_run(factory, instance, dataset).id)
    assert run.results_error == "" and run.results_at is not None
    assert run.metrics["best_val_loss"] == 1.5 and run.eval_metrics["metrics"]["f1"]["value"] == 0.5
    assert run.checkpoint_path == str(Path(run.run_dir) / "best")
    assert results_row(run) == {"run": run.id, "seed": 0, "state": "succeeded", "steps": 2, "best_val_loss": 1.5,
                                "threshold": 0.1, "f1": 0.5, "checkpoint": run.checkpoint_path}
    with factory() as session:
        score_set = session.scalars(select(ScoreSet).where(ScoreSet.train_run_id == run.id)).one()
    assert (score_set.dataset_id, score_set.n_items, score_set.model_fingerprint) == (dataset, 24, "sha256:abc")
    assert score_set.model_name == "exp seed 0" and score_set.meaningless  # fine-tuned from the tiny model
    assert score_set.note == f"training run {run.id}"


def test_unreadable_results_are_recorded_and_leave_no_score_set(factory, instance, dataset: int) -> None:  # noqa: ANN001
    run = finished_run(factory, instance, dataset)
    scores = Path(run.run_dir) / "eval" / "scores.csv"
    scores.write_text(scores.read_text().replace("syn-000003", "someone-else"))
    run = import_results(factory, run.id)
    assert "'someone-else') are not items of the evaluation dataset" in run.results_error
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(ScoreSet)) == 0


def test_deleting_an_ended_experiment_removes_its_runs_score_sets_verdicts_and_folder(
        factory, instance, dataset: int) -> None:  # noqa: ANN001
    run = import_results(factory, finished_run(factory, instance, dataset).id)
    kept = create_experiment(factory, instance, request(dataset, name="kept"), inventory=CPU_ONLY)
    with write_session(factory) as session:
        score_set = session.scalars(select(ScoreSet).where(ScoreSet.train_run_id == run.id)).one()
        session.add(TriageDecision(item_id=session.scalars(select(Item.id)).first(), score_set_id=score_set.id,
                                   verdict="ambiguous", note="", decided_at=utcnow()))
        experiment = session.get(Experiment, run.experiment_id)
    folder = Path(experiment.folder)
    with pytest.raises(ExperimentError, match="'kept' still has 1 run\\(s\\) queued"):
        delete_experiment(factory, kept.id)

    said = delete_experiment(factory, experiment.id)
    assert said == f"Deleted 'exp': 1 run(s), 1 score set(s) and the folder {folder}."
    assert not folder.exists() and Path(kept.folder).is_dir()
    with factory() as session:
        assert [e.name for e in session.scalars(select(Experiment))] == ["kept"]
        assert session.scalar(select(func.count()).select_from(TrainRun)) == 1
        for table in (ScoreSet, Score, TriageDecision):
            assert session.scalar(select(func.count()).select_from(table)) == 0
    with pytest.raises(ExperimentError, match="deleted already"):
        delete_experiment(factory, experiment.id)
