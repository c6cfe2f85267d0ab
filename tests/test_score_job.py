"""Scoring as a job: the job module (``cftclip_core.score_job``) on its own, and the queue's side
(``train_jobs.scoring``: checks before queueing, the pairs table, the import of the scores as a score set)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from annotations.db import write_session
from annotations.importer import ensure_demo_dataset
from annotations.models import ScoreSet, TrainRun
from cftclip_core import score_job
from cftclip_core.embedding_cache import EmbeddingCache
from cftclip_core.errors import ConfigError
from cftclip_core.scoring import ScoreItem, ScoreOptions, score_pairs
from tests.conftest import make_image
from train_jobs import runfiles, states
from train_jobs.api import GpuInventory, ScoreRequest, import_results, queue_scoring, score_jobs


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    """Ten pairs: five images, each with two texts."""
    rows = []
    for i in range(10):
        image = make_image(tmp_path / "img" / f"{i % 5}.jpg", colour=(40 * (i % 5), 200 - 30 * (i % 5), 90))
        rows.append({"key": str(100 + i), "image": str(image), "text": f"Person number {i} speaks in the city"})
    path = tmp_path / "pairs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def job_args(pairs: Path, out: Path, model: str, **extra: str) -> list[str]:
    args = ["--pairs", str(pairs), "--model", model, "--text-field", "summary", "--out", str(out),
            "--device", "cpu", "--precision", "fp32"]
    return args + [item for pair in ((f"--{k.replace('_', '-')}", v) for k, v in extra.items()) for item in pair]


def test_the_job_scores_every_pair_as_the_library_does_and_says_so_in_its_files(
        pairs: Path, tmp_path: Path, tiny_model, tiny_model_dir: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(tmp_path / "instance"))
    out = tmp_path / "run"
    assert score_job.main(job_args(pairs, out, str(tiny_model_dir), chunk_size="4")) == 0
    scores = pd.read_csv(out / "scores.csv", dtype={"key": str})
    table = pd.read_csv(pairs, dtype=str)
    direct = score_pairs(tiny_model, [ScoreItem(k, Path(i), t) for k, i, t in table.itertuples(index=False)],
                         options=ScoreOptions(precision="fp32"))
    assert scores["key"].tolist() == table["key"].tolist()
    np.testing.assert_allclose(scores["similarity"], direct.similarities, atol=1e-5)
    summary = json.loads((out / "score.json").read_text())
    assert summary["n_items"] == 10 and summary["text_field"] == "summary" and summary["tiny"] is True
    heartbeat = json.loads((out / "heartbeat.json").read_text())
    assert (heartbeat["phase"], heartbeat["step"], heartbeat["total_steps"]) == ("done", 10, 10)


class StopAfterFirstChunk:
    """What SIGTERM sets, set by the time the second chunk would start."""

    def __init__(self) -> None:
        self.checks = 0

    @property
    def requested(self) -> bool:
        self.checks += 1
        return self.checks > 1


def test_a_stopped_job_keeps_what_it_computed_and_scoring_again_computes_only_the_rest(
        pairs: Path, tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(tmp_path / "instance"))
    cache_file = tmp_path / "instance" / "cache" / "embeddings.sqlite"
    args = score_job.build_parser().parse_args(job_args(pairs, tmp_path / "run", str(tiny_model_dir),
                                                        chunk_size="4"))
    heartbeat = score_job.Heartbeat(args.out, enabled=False)
    assert score_job.score(args, heartbeat, StopAfterFirstChunk()) is None  # stopped after 4 of 10 pairs
    with EmbeddingCache(cache_file) as cache:
        after_stop = cache.count()
    assert after_stop == 4 + 4  # the first chunk's 4 images and 4 texts, saved before the stop
    assert not (args.out / "scores.csv").exists()
    computed = []

    def counting(*a, **k):  # noqa: ANN002, ANN003, ANN202
        run = score_pairs(*a, **k)
        computed.append(run.images_computed + run.texts_computed)
        return run

    monkeypatch.setattr("cftclip_core.scoring.score_pairs", counting)
    assert score_job.main(job_args(pairs, tmp_path / "again", str(tiny_model_dir), chunk_size="4")) == 0
    assert sum(computed) == (5 + 10) - after_stop  # 5 distinct images and 10 texts in all, minus the cached ones


def test_a_pairs_table_it_cannot_use_fails_the_job_with_a_message(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    bad = tmp_path / "pairs.csv"
    bad.write_text("key,image,text\n1,/nowhere/a.jpg,hello\n")
    assert score_job.main(job_args(bad, tmp_path / "run", "tiny-demo")) == score_job.EXIT_USER_ERROR
    assert "error: 1 image(s) of the pairs table are missing (e.g. /nowhere/a.jpg)" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "heartbeat.json").read_text())["phase"] == "failed"


# --- the queue's side -------------------------------------------------------------------------------------
@pytest.fixture
def demo(factory, instance) -> int:  # noqa: ANN001
    return ensure_demo_dataset(instance, factory).id


@pytest.mark.parametrize(("request_changes", "message"), [
    ({"model": "  "}, "Model: give a hub id"),
    ({"model": "/no/such/folder"}, "No model folder at '/no/such/folder'"),
    ({"text_field": "body"}, "text_field='body' is not valid"),
    ({"backend": "torchrun"}, "not on 'torchrun'"),
    ({"n_gpus": 2}, "not 2"),
    ({"n_gpus": 1}, "This machine has no GPU to score on"),
])
def test_scoring_requests_are_checked_before_anything_is_queued(factory, instance, demo: int, request_changes: dict,
                                                                message: str) -> None:  # noqa: ANN001
    request = ScoreRequest(**{"dataset_id": demo, "model": "tiny-demo", **request_changes})
    with pytest.raises(ConfigError, match=message):
        queue_scoring(factory, instance, request, inventory=GpuInventory((), "none", "No GPU found."))
    with factory() as session:
        assert session.scalars(select(TrainRun)).first() is None
    assert not (instance.instance_dir / "runs").exists() or not any((instance.instance_dir / "runs").iterdir())


def test_a_finished_job_becomes_a_flagged_score_set_of_the_dataset(factory, instance, demo: int) -> None:  # noqa: ANN001
    run = queue_scoring(factory, instance, ScoreRequest(demo, "tiny-demo", "title"))
    assert run.command[:3] == ["python", "-m", "cftclip_core.score_job"] and run.state == "queued"
    pairs = pd.read_csv(Path(run.command[run.command.index("--pairs") + 1]), dtype=str)
    assert len(pairs) == 26 and all(Path(p).is_file() for p in pairs["image"])  # the media store's files
    with write_session(factory) as session:  # the job ran and wrote what the job module writes
        current = session.get(TrainRun, run.id)
        for state in (states.STARTING, states.RUNNING, states.SUCCEEDED):
            states.move(current, state)
    pd.DataFrame({"key": pairs["key"], "similarity": 0.25, "truncated": False}).to_csv(
        Path(run.run_dir) / runfiles.SCORES, index=False)
    (Path(run.run_dir) / runfiles.SCORE_SUMMARY).write_text(json.dumps(
        {"model_name": "tiny-demo", "model_fingerprint": "sha256:t", "tiny": True, "text_field": "title",
         "n_items": 26, "n_truncated": 0, "precision": "fp32", "seconds": 1.0}))
    imported = import_results(factory, run.id)
    assert imported.results_error == "" and imported.metrics["n_items"] == 26
    with factory() as session:
        score_set = session.scalars(select(ScoreSet)).one()
        jobs = score_jobs(session, demo)
    assert (score_set.dataset_id, score_set.model_name, score_set.text_field, score_set.n_items) == (
        demo, "tiny-demo", "title", 26)
    assert score_set.meaningless and score_set.train_run_id == run.id
    assert len(jobs) == 1 and jobs[0].imported and not jobs[0].active
