"""The Train page through Streamlit's AppTest, reached through the app's navigation. Nothing trains here:
the launcher is a stand-in that records launches, and a run's progress is what its run folder says (the
files a trainer writes, written by the test), read by the real reconciler. The queue is polled by hand
(``poll_queue``), as the instance's poller does every few seconds; the page only reads and acts."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from annotations.db import write_session
from annotations.importer import import_dataset
from annotations.models import Experiment, TrainRun
from cftclip_core.formats import read_table
from cftclip_core.specs.training import field_help
from tests.conftest import app_test, sessions
from train_jobs import runfiles, states
from train_jobs.api import ExperimentRequest, Poller, create_experiment, experiment_runs, poll
from train_jobs.gpus import Gpu
from train_jobs.launchers import BackendStatus, Launched, LaunchSpec

RESEARCHER = ("rita", "researcher")
PAGE = "pages/train.py"
TWO_GPUS = [Gpu(0, "Test GPU", 80_000, 1_000, 5), Gpu(1, "Test GPU", 80_000, 500, 0)]



class StandInLauncher:
    """Records launches and stop requests; its jobs are 'alive' until their folder holds exit.json."""

    name = "local"

    def __init__(self) -> None:
        self.specs: list[LaunchSpec] = []
        self.stopped: list[int] = []

    def launch(self, spec: LaunchSpec) -> Launched:
        self.specs.append(spec)
        return Launched(["stand-in"], host=None, pid=10**7 + len(self.specs), pid_started="0")

    def status(self, run: TrainRun) -> BackendStatus:
        return BackendStatus(alive=True, host=run.host)

    def stop(self, run: TrainRun) -> bool:
        self.stopped.append(run.id)
        return True

    def kill(self, run: TrainRun) -> bool:
        return True


@pytest.fixture
def launcher(monkeypatch: pytest.MonkeyPatch) -> StandInLauncher:
    """Every poll and cancel of the app goes to the stand-in; the machine has no GPU and no Slurm."""
    stand_in = StandInLauncher()
    monkeypatch.setattr("train_jobs.reconcile.default_launchers", lambda job_settings: lambda backend: stand_in)
    machine(monkeypatch, gpus=[], sbatch=False)
    for name in ("CFTCLIP_CPU_JOBS", "CFTCLIP_JOBS_PER_GPU", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    return stand_in


def machine(monkeypatch: pytest.MonkeyPatch, *, gpus: list[Gpu], sbatch: bool) -> None:
    def no_nvidia_smi(executable: str, tried: list[str]) -> list[Gpu]:
        tried.append(f"{executable} not found on PATH")
        return []

    monkeypatch.setattr("train_jobs.gpus._from_nvml", lambda tried: list(gpus) or None)
    monkeypatch.setattr("train_jobs.gpus._from_nvidia_smi", no_nvidia_smi)
    monkeypatch.setattr("train_jobs.api.slurm_available", lambda: sbatch)


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-item synthetic set (labelled, train/val/test splits) with one counterfactual text per item."""
    from cftclip_core import cli
    from cftclip_core.synthetic import WorldConfig, generate_dataset

    csv = generate_dataset(tmp_path_factory.mktemp("syn") / "syn", 24, WorldConfig(image_size=64), seed=0)
    assert cli.main(["counterfactual", "--data", str(csv), "--out", str(csv.with_name("cf.csv"))]) == 0
    return csv.with_name("cf.csv")


@pytest.fixture
def dataset(app_instance, synthetic_csv: Path) -> int:  # noqa: ANN001
    return import_dataset(sessions(app_instance), app_instance, read_table(synthetic_csv), "synthetic").id


def poll_queue(settings) -> None:  # noqa: ANN001
    """One poll of the queue, as the instance's poller makes every few seconds."""
    poll(sessions(settings), settings)


def open_train(settings, user: tuple[str, str] = RESEARCHER):  # noqa: ANN001, ANN201
    """The Train page as a signed-in user reaches it: through the app's navigation."""
    at = app_test(settings, user=user).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def launch(at):  # noqa: ANN001, ANN201
    return at.button(key="train_launch").click().run()


def fill_tiny_experiment(at, dataset: int, name: str = "cft-tiny"):  # noqa: ANN001, ANN201
    at.text_input(key="train_name").input(name)
    at.selectbox(key="train_dataset").set_value(dataset)
    at.selectbox(key="train_eval").set_value(dataset)
    at.selectbox(key="train_model").set_value("tiny-demo")
    for field, value in (("batch_size", "4"), ("max_steps", "3"), ("freeze_text_layers", "1"), ("lr", "2e-4")):
        at.text_input(key=f"train_cfg_{field}").input(value)
    return at


def markdown(at) -> str:  # noqa: ANN001
    return "\n".join(m.value for m in at.markdown)


def plain(text: str) -> str:
    """A message as the user reads it: without the backslashes that keep Markdown from rendering it."""
    return re.sub(r"\\(.)", r"\1", text)


def runs_of(settings, name: str) -> list[TrainRun]:  # noqa: ANN001
    with sessions(settings)() as session:
        experiment = session.scalars(select(Experiment).where(Experiment.name == name)).one()
        return experiment_runs(session, experiment.id)


def test_train_page_is_for_researchers_and_admins(app_instance) -> None:  # noqa: ANN001
    at = app_test(app_instance, PAGE, user=("ann", "annotator")).run()
    assert any("you are signed in as an annotator" in e.value for e in at.error)
    assert not at.button and not at.text_input
    assert any("Please sign in first" in e.value for e in app_test(app_instance, PAGE).run().error)
    assert open_train(app_instance, ("ada", "admin")).title[0].value == "Train"


def test_a_cpu_only_machine_says_so_and_offers_only_the_cpu(
        app_instance, launcher, dataset: int) -> None:  # noqa: ANN001
    at = open_train(app_instance)
    assert any(i.value.startswith("**CPU only.** No GPU found") for i in at.info)
    assert at.radio(key="train_where").options == ["This machine's CPU"]
    assert any("sbatch" in c.value and "docs/slurm.md" in c.value for c in at.caption)


def test_gpus_and_slurm_are_offered_where_they_exist(app_instance, launcher, dataset: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    machine(monkeypatch, gpus=TWO_GPUS, sbatch=True)
    at = open_train(app_instance)
    assert not any("CPU only" in i.value for i in at.info)
    assert at.radio(key="train_where").options == ["This machine's CPU", "GPUs of this machine", "A Slurm cluster"]
    at.radio(key="train_where").set_value("gpu").run()
    assert at.dataframe[0].value["GPU"].tolist() == [0, 1]
    fill_tiny_experiment(at, dataset, name="on-gpus")
    at.number_input(key="train_gpus").set_value(2)
    launch(at)
    poll_queue(app_instance)
    runs = runs_of(app_instance, "on-gpus")
    assert {(r.backend, r.n_gpus) for r in runs} == {("torchrun", 2)}
    assert launcher.specs[0].gpus == (0, 1)  # the queue placed the first run on both GPUs


def test_launch_queues_one_run_per_seed_with_the_forms_config_and_shows_them(
        app_instance, launcher, dataset: int) -> None:  # noqa: ANN001
    at = open_train(app_instance)
    assert at.text_input(key="train_seeds").value == "0-4"  # the paper's seeds
    assert at.text_input(key="train_cfg_lr").value == "0.0001"  # the paper's hyperparameters, pre-filled
    assert at.text_input(key="train_cfg_batch_size").value == "128"
    assert at.text_input(key="train_cfg_lr").help == field_help("lr")  # what it does, then the default
    assert at.text_input(key="train_cfg_max_steps").help == field_help("max_steps") + "; empty: none"
    assert at.radio(key="train_loss").value == "cft"
    assert any("carries 1 counterfactual text(s) per item" in plain(c.value) for c in at.caption)
    launch(fill_tiny_experiment(at, dataset))
    assert not at.exception
    assert any("Experiment 'cft-tiny' created: 5 run(s) queued" in plain(s.value) for s in at.success)
    poll_queue(app_instance)
    at.run()
    runs = runs_of(app_instance, "cft-tiny")
    assert [r.seed for r in runs] == [0, 1, 2, 3, 4]
    config = runs[0].config
    assert (config["model"], config["loss"], config["lr"], config["batch_size"], config["max_steps"]) == (
        "tiny-demo", "cft", 2e-4, 4, 3)
    assert config["max_epochs"] == 20 and config["grad_clip"] is None and config["seed"] == 0
    # One CPU slot: the first run is launched, the others wait for it, and the page says why.
    assert [r.state for r in runs] == ["starting"] + ["queued"] * 4
    assert launcher.specs[0].command[launcher.specs[0].command.index("--seed") + 1] == "0"
    assert "--eval" in launcher.specs[0].command
    assert all(f"**Seed {seed}**" in markdown(at) for seed in range(5))
    assert any("waiting for a CPU slot" in plain(c.value) for c in at.caption)
    assert at.selectbox(key="train_experiment").value == runs[0].experiment_id
    assert at.text_input(key="train_name").value == "cft-tiny-2"  # ready for the next experiment


@pytest.mark.parametrize(("field", "value", "message"), [
    ("train_cfg_lr", "fast", "lr='fast' is not valid"),
    ("train_cfg_batch_size", "1", "batch_size=1 is not valid"),
    ("train_cfg_batch_size", "64", "batch_size=64 is larger than the 19 training item(s)"),
    ("train_seeds", "4-0", "Seeds '4-0' are not valid"),
])
def test_invalid_settings_show_the_field_and_launch_nothing(app_instance, launcher, dataset: int, field: str,
                                                            value: str, message: str) -> None:  # noqa: ANN001
    at = fill_tiny_experiment(open_train(app_instance), dataset)
    at.text_input(key=field).input(value)
    launch(at)
    assert not at.exception
    assert any(message in plain(e.value) for e in at.error), [e.value for e in at.error]
    with sessions(app_instance)() as session:
        assert session.scalar(select(func.count()).select_from(Experiment)) == 0
    assert not (app_instance.instance_dir / "runs").exists() or not any((app_instance.instance_dir / "runs").iterdir())
    assert not launcher.specs


def test_choosing_the_tiny_model_fits_the_papers_freezing_to_its_two_layers(app_instance, launcher,
                                                                           dataset: int) -> None:  # noqa: ANN001
    at = open_train(app_instance)
    assert at.text_input(key="train_cfg_freeze_text_layers").value == "11"  # the paper's, for ViT-L/14
    at.selectbox(key="train_model").set_value("tiny-demo").run()
    assert at.text_input(key="train_cfg_freeze_text_layers").value == "1"
    assert any("tiny-demo has 2 text and 2 vision layers: freeze_text_layers 11 -> 1" in plain(c.value)
               for c in at.caption)
    at.text_input(key="train_name").input("fitted")
    at.selectbox(key="train_dataset").set_value(dataset)
    at.text_input(key="train_cfg_batch_size").input("4")
    at.radio(key="train_loss").set_value("clip")
    launch(at)
    assert not at.exception and not at.error
    assert runs_of(app_instance, "fitted")[0].config["freeze_text_layers"] == 1


def queued_experiment(settings, dataset: int, seeds: tuple[int, ...] = (0, 1)) -> int:  # noqa: ANN001
    config = {"model": "tiny-demo", "loss": "clip", "batch_size": 4, "freeze_text_layers": 1}
    request = ExperimentRequest(name="watched", config=config,
                                train_dataset_id=dataset, seeds=seeds)
    return create_experiment(sessions(settings), settings, request).id


def write_progress(run: TrainRun, *, step: int, total: int) -> None:
    """What a training process leaves in its folder after ``step`` steps (0.4 s + 0.1 s of data each)."""
    folder = Path(run.run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    records = [{"step": s, "epoch": 0, "loss": 3.0 - s / total, "lr": 1e-4, "data_time": 0.1, "step_time": 0.4,
                "total_steps": total, "samples_per_s": 8.0} for s in range(1, step + 1)]
    records += [{"step": s, "epoch": 0, "val_loss": 2.5 - s / total, "improved": True} for s in range(10, step + 1, 10)]
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    runfiles.write_json_atomic(folder / "heartbeat.json", {"time": time.time(), "pid": 1, "phase": "training",
                                                           "step": step, "total_steps": total, "samples_per_s": 8.0})
    with open(run.log_path, "a", encoding="utf-8") as log:
        log.write(f"step {step}/{total} loss {3.0 - step / total:.4f}\n")


def write_finished(run: TrainRun, *, f1: float) -> None:
    folder = Path(run.run_dir)
    (folder / "best").mkdir()
    (folder / "eval").mkdir()
    runfiles.write_json_atomic(folder / "metrics.json", {"best_step": 30, "best_val_loss": 2.2, "steps": 100})
    runfiles.write_json_atomic(folder / "eval" / "metrics.json", {"threshold": {"value": 0.1, "strategy": "val-median"},
                                                                  "metrics": {"f1": {"value": f1},
                                                                              "roc_auc": {"value": 0.5}}})
    runfiles.write_exit(folder, 0, cancel_seen=False)


def test_live_view_shows_progress_speed_eta_curves_log_and_results(
        app_instance, launcher, dataset: int) -> None:  # noqa: ANN001
    experiment_id = queued_experiment(app_instance, dataset)
    poll_queue(app_instance)  # launches seed 0
    at = open_train(app_instance)
    with sessions(app_instance)() as session:
        first, second = experiment_runs(session, experiment_id)
    assert first.state in states.LAUNCHED and second.state == "queued"
    write_progress(first, step=30, total=100)
    poll_queue(app_instance)
    at.run()
    assert "**Seed 0**" in markdown(at) and "8.0 samples/s" in markdown(at)
    assert "ETA 35 s" in markdown(at)  # 70 steps to go at 0.5 s each
    assert any(p.value == 30 and "step 30/100 · training" in p.text for p in at.get("progress"))
    assert len(at.get("vega_lite_chart")) == 2  # training and validation loss
    assert "step 30/100 loss 2.7000" in at.code[0].value  # the log tail of the first run
    write_finished(first, f1=0.667)
    poll_queue(app_instance)
    at.run()
    with sessions(app_instance)() as session:
        done = session.get(TrainRun, first.id)
    assert done.state == "succeeded" and done.eval_metrics["metrics"]["f1"]["value"] == 0.667
    assert "best validation loss 2.200" in markdown(at)  # no evaluation dataset: no score set, so no F1 shown
    finished = at.dataframe[-1].value.set_index("seed")  # the finished runs' results (F1 and co.: see
    assert finished.loc[0, "steps"] == 100 and "f1" not in finished.columns  # test_app_metric_consistency)
    assert [link.proto.page for link in at.get("page_link")] == ["models"]  # the Models results page
    with sessions(app_instance)() as session:  # the CPU slot is free again: the second seed was launched
        assert session.get(TrainRun, second.id).state in states.LAUNCHED


def test_cancel_buttons_stop_a_running_run_and_drop_a_queued_one(
        app_instance, launcher, dataset: int) -> None:  # noqa: ANN001
    experiment_id = queued_experiment(app_instance, dataset)
    poll_queue(app_instance)
    at = open_train(app_instance)
    with sessions(app_instance)() as session:
        running, queued = experiment_runs(session, experiment_id)
    at.button(key=f"cancel_{running.id}").click().run()
    assert launcher.stopped == [running.id]
    assert any("asked to stop (SIGTERM)" in plain(i.value) for i in at.info)
    assert at.button(key=f"cancel_{running.id}").disabled  # a second cancel is not offered
    at.button(key=f"cancel_{queued.id}").click().run()
    assert any("cancelled before it started" in plain(i.value) for i in at.info)
    with sessions(app_instance)() as session:
        assert session.get(TrainRun, queued.id).state == "cancelled"
    assert launcher.stopped == [running.id]


def test_resume_button_queues_a_cancelled_run_again_from_its_checkpoint(
        app_instance, launcher, dataset: int) -> None:  # noqa: ANN001
    experiment_id = queued_experiment(app_instance, dataset, seeds=(0, 1))
    factory = sessions(app_instance)
    with write_session(factory) as session:  # seed 0 was cancelled after a checkpoint, seed 1 before any
        resumable, bare = experiment_runs(session, experiment_id)
        for run in (resumable, bare):
            states.move(run, states.CANCELLED, "cancelled")
    Path(resumable.run_dir, runfiles.LAST).mkdir(parents=True)
    Path(resumable.run_dir, runfiles.LAST, "trainer_state.pt").write_bytes(b"saved")
    at = open_train(app_instance)
    assert not any(b.key == f"resume_{bare.id}" for b in at.button)  # nothing to resume from
    at.button(key=f"resume_{resumable.id}").click().run()
    assert not at.exception
    assert any("queued again; it continues from its last checkpoint" in plain(i.value) for i in at.info)
    poll_queue(app_instance)
    assert launcher.specs[-1].run_id == resumable.id and launcher.specs[-1].command[-1] == "--resume"
    with factory() as session:
        assert session.get(TrainRun, resumable.id).state == "starting"  # the poll launched it
        assert session.get(TrainRun, bare.id).state == "cancelled"


def test_an_ended_experiment_is_deleted_from_the_page(app_instance, launcher, dataset: int) -> None:  # noqa: ANN001
    experiment_id = queued_experiment(app_instance, dataset, seeds=(0,))
    poll_queue(app_instance)
    at = open_train(app_instance)
    with sessions(app_instance)() as session:
        run = experiment_runs(session, experiment_id)[0]
        folder = Path(session.get(Experiment, experiment_id).folder)
    at.button(key=f"cancel_{run.id}").click().run()  # a launched run is cancelled first...
    Path(run.run_dir).mkdir(parents=True, exist_ok=True)
    runfiles.write_exit(Path(run.run_dir), 143, cancel_seen=True)  # ...and stops
    poll_queue(app_instance)
    at.run()
    at.button(key=f"delete_{experiment_id}").click().run()
    assert not at.exception
    assert any(f"Deleted 'watched': 1 run(s), 0 score set(s) and the folder {folder}." in plain(i.value)
               for i in at.info)
    assert any("No experiment yet" in plain(i.value) for i in at.info) and not folder.exists()


def wait_for(condition, what: str, seconds: float = 60.0):  # noqa: ANN001, ANN201
    """``condition()`` once it is true, waiting at most ``seconds`` (a bound for slow machines, not a measure)."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def test_the_app_starts_the_queue_poller_which_settles_a_run_that_finished_while_the_app_was_down(
        app_instance, launcher, dataset: int, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    experiment_id = queued_experiment(app_instance, dataset, seeds=(0,))
    factory = sessions(app_instance)
    with write_session(factory) as session:  # launched by an earlier server process, which then stopped
        run = experiment_runs(session, experiment_id)[0]
        states.move(run, states.STARTING)
        run.pid, run.pid_started, run.host = 10**7, "0", None
    write_progress(run, step=100, total=100)
    write_finished(run, f1=0.5)
    monkeypatch.setenv("CFTCLIP_APP_POLLER", "1")
    at = app_test(app_instance, user=("ann", "annotator")).run()  # any page: the poller starts with the app
    assert at.title[0].value == "Annotate"

    def settled() -> TrainRun | None:
        with factory() as session:
            found = session.get(TrainRun, run.id)
        return found if found.results_at is not None else None

    done = wait_for(settled, "the app's poller to settle the run")
    assert done.state == "succeeded" and done.metrics["steps"] == 100
    at = open_train(app_instance)  # the page says who polls
    assert any("Queue polled by the app (process" in plain(c.value) for c in at.caption)


def test_without_a_poller_the_train_page_says_queued_runs_wait(app_instance, launcher) -> None:  # noqa: ANN001
    at = open_train(app_instance)
    assert any("No poller is running for this instance" in w.value for w in at.warning)


def test_a_failing_poll_is_said_on_the_train_page_and_the_poller_goes_on(
        app_instance, launcher, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    calls = []

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        raise RuntimeError("database is locked")

    monkeypatch.setattr("train_jobs.poller.poll", broken)
    poller = Poller(app_instance, owner="the app", interval_s=0.05)
    thread = poller.start_thread()
    try:
        wait_for(lambda: len(calls) >= 2, "a second poll after the failed one")
    finally:
        poller.stop()
        thread.join(10)
    at = open_train(app_instance)
    assert any("last poll failed: RuntimeError: database is locked" in plain(w.value) for w in at.warning)


# --- presets and warnings -----------------------------------------------------------------------------------
def test_quick_run_works_offline_on_a_fresh_instance(app_instance, launcher, monkeypatch) -> None:  # noqa: ANN001
    from cftclip_core import cli
    from train_jobs.commands import split_command

    at = open_train(app_instance)
    at.button(key="train_quick").click().run()
    assert not at.exception and any("Quick run" in plain(s.value) for s in at.success)
    assert at.selectbox(key="train_model").value == "tiny-demo"
    assert at.text_input(key="train_cfg_batch_size").value == "8" and at.text_input(key="train_seeds").value == "0"
    assert any("not made with the paper's recipe" in plain(w.value) and "--recipe paper" in plain(w.value)
               for w in at.warning)  # the offline recipe made them, and the page says so
    assert not any("share" in w.value for w in at.warning)  # training, validation and evaluation apart
    launch(at)
    [run] = runs_of(app_instance, "quick-run")
    assert run.config["model"] == "tiny-demo" and "--threshold-from" in run.command
    # The queued command trains and evaluates here, offline (the stand-in launcher did not run it).
    module, args = split_command(run.command)
    assert module == "cftclip_core" and cli.main(args) == 0
    metrics = json.loads((Path(run.run_dir) / "eval" / "metrics.json").read_text())
    assert metrics["threshold_from"] == "train-val" and metrics["n"] > 0
    at.button(key="train_quick").click().run()  # a second time: the same datasets, a new experiment name
    assert at.text_input(key="train_name").value == "quick-run-2"


def test_replication_preset_sets_and_locks_the_original_codes_choices(
        app_instance, launcher, dataset: int) -> None:  # noqa: ANN001
    at = fill_tiny_experiment(open_train(app_instance), dataset, name="replica")
    assert at.selectbox(key="train_cfg_schedule").value == "cosine"
    at.checkbox(key="train_cfg_replicate_original").check().run()
    assert at.selectbox(key="train_cfg_schedule").value == "periodic" and at.selectbox(key="train_cfg_schedule").disabled
    assert at.selectbox(key="train_cfg_schedule").help == field_help("schedule") + "; set by replicate_original"
    assert at.selectbox(key="train_cfg_long_texts").value == "drop"
    assert at.selectbox(key="train_cfg_ties_improve").value == "true"
    assert at.selectbox(key="train_threshold_from").value == "train-val"
    launch(at)
    [run, *_] = runs_of(app_instance, "replica")
    assert (run.config["replicate_original"], run.config["schedule"], run.config["precision"]) == (True, "periodic",
                                                                                                   "fp32")
    assert run.command[run.command.index("--threshold-from") + 1] == "train-val"
    at.checkbox(key="train_cfg_replicate_original").uncheck().run()
    assert at.selectbox(key="train_cfg_schedule").value == "cosine" and not at.selectbox(
        key="train_cfg_schedule").disabled


def test_overlapping_sets_are_warned_about(app_instance, launcher, dataset: int) -> None:  # noqa: ANN001
    at = open_train(app_instance)
    at.selectbox(key="train_dataset").set_value(dataset).run()
    assert not any("share" in w.value for w in at.warning)  # its 'train' and 'val' rows apart, no evaluation set
    at.selectbox(key="train_eval").set_value(dataset).run()  # evaluating on the training dataset itself
    shared = [plain(w.value) for w in at.warning if "share" in w.value]
    assert len(shared) == 2 and "The training and evaluation sets share 19 item(s)" in shared[0]
    assert "The validation and evaluation sets share" in shared[1]
