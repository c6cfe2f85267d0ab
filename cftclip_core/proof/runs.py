"""One run: an arm of a world, for one seed and data seed, from every stage-0 dose.

RUN_DIR follows the training run-folder contract where it applies: heartbeat.json (steps counted over
the run: the stage 0 it trains, if any, then each dose's stage 1); log.jsonl (every dose's training
records, ``step`` counted over the run, ``dose`` and ``dose_step`` added); proof.json (what was asked);
one folder per dose, ``dose-N``, with the trainer's files (config.json, log.jsonl, metrics.json, best/:
the checkpoint with the lowest validation loss, which is the one evaluated), eval/scores.csv,
eval/metrics.json and, written last, result.json; and, written last of all, metrics.json: world, arm,
seed, data seed, settings, per-dose results, the mean over doses of every metric, the stage-1 batches'
false negatives (trained arms), seconds per phase and the process's CPU seconds. A dose whose result.json matches the run is kept
when a stopped run is started again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from cftclip_core.errors import ConfigError
from cftclip_core.evaluation import write_json
from cftclip_core.heartbeat import Heartbeat
from cftclip_core.models import LoadedModel, load_model
from cftclip_core.proof.batches import count_false_negatives, training_batches
from cftclip_core.proof.cache import (
    RunStopped,
    Stage0,
    WorldData,
    ensure_stage0,
    prepare_world,
)
from cftclip_core.proof.evaluation import evaluate_model
from cftclip_core.proof.model import stage1_config
from cftclip_core.proof.run_files import finished_metrics, read_json_with
from cftclip_core.specs.proof import ARMS, METRICS, WORLDS, ProofSettings, RunKey, check_choice
from cftclip_core.specs.seeds import check_seeds
from cftclip_core.training import train

logger = logging.getLogger(__name__)

RESULT = "result.json"


class RunHeartbeat(Heartbeat):
    """The run's heartbeat, its steps counted over the whole run: each training reports its own steps, from
    ``offset`` on, and the run's ``total``."""

    offset = 0
    total = 0

    def beat(self, *, force: bool = False, **fields: Any) -> None:
        if "step" in fields:
            fields["step"] = self.offset + fields["step"]
        if "total_steps" in fields:
            fields["total_steps"] = self.total
        super().beat(force=force, **fields)


def check_run(run: RunKey) -> None:
    check_choice("world", run.world, list(WORLDS))
    check_choice("arm", run.arm, list(ARMS))
    check_seeds([run.seed, run.data_seed] if run.seed != run.data_seed else [run.seed])


def run_one(run: RunKey, run_dir: Path, cache: Path, settings: ProofSettings, *,
            stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Stage 0 (cached), then for each dose stage 1 of the arm and the evaluation, in ``run_dir``; returns
    metrics.json."""
    check_run(run)
    settings.validate()
    if finished_metrics(run_dir) is not None:
        raise ConfigError(f"{run_dir} already holds a finished run; choose another --out folder or delete it.")
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = cache.resolve()
    arm = ARMS[run.arm]
    asked = {**dataclasses.asdict(run), "world_description": WORLDS[run.world].description, "loss": arm.loss,
             "swaps": arm.swaps, "settings": settings.result_key()}
    write_json(run_dir / "proof.json", {**asked, "cache": str(cache)})
    beat = RunHeartbeat(run_dir).start()  # rewritten every few seconds until done, stopped or failed
    beat.total = len(settings.stage0_steps) * settings.steps if arm.loss else 0
    seconds: dict[str, float] = {}
    try:
        started = time.perf_counter()
        data = WorldData.load(prepare_world(cache, run.world, settings, run.data_seed))
        seconds["data"] = time.perf_counter() - started

        def on_train() -> None:  # this run trains the stage 0: its steps count in this run's heartbeat
            beat.total += settings.stage0_total

        started = time.perf_counter()
        stage0 = ensure_stage0(cache, run.world, data, settings, run.seed, run.data_seed, stop=stop,
                               on_train=on_train, beat=beat)
        seconds["stage0"] = time.perf_counter() - started
        beat.offset = beat.total - (len(settings.stage0_steps) * settings.steps if arm.loss else 0)
        doses: list[dict[str, Any]] = []
        with (run_dir / "log.jsonl").open("a", encoding="utf-8") as log_file:
            for dose in settings.stage0_steps:
                doses.append(_run_dose(run, dose, run_dir / f"dose-{dose}", asked, data, stage0, cache, settings,
                                       beat, log_file, stop))
                beat.offset += settings.steps if arm.loss else 0
        seconds["doses"] = sum(d["seconds"]["train"] + d["seconds"]["eval"] for d in doses)
        result = {"world": run.world, "arm": run.arm, "seed": run.seed, "data_seed": run.data_seed,
                  "settings": settings.result_key(), "stage0_model": str(stage0.folder),
                  "steps": sum(d["steps"] for d in doses),
                  **{name: sum(d[name] for d in doses) / len(doses) for name, _ in METRICS},
                  "doses": doses, "seconds": {k: round(v, 2) for k, v in seconds.items()},
                  "cpu_seconds": round(time.process_time(), 2)}  # this process's CPU time, imports included
        if arm.loss:
            train_records = data.positives("train").records
            batches = training_batches(len(train_records), settings.batch_size, run.seed, settings.steps)
            result["false_negatives"] = count_false_negatives(train_records, batches).to_dict()
        write_json(run_dir / "metrics.json", result)  # last: marks the run finished
    except RunStopped:
        beat.beat(phase="stopped")
        raise
    except BaseException:
        beat.beat(phase="failed")
        raise
    beat.beat(phase="done")
    logger.info("%s: ROC-AUC %.3f, name accuracy %.3f, image AUC (other person) %.3f, mean over doses %s",
                run.describe(), result["roc_auc"], result["name_accuracy"], result["image_auc_person"],
                ",".join(map(str, settings.stage0_steps)))
    return result


def _run_dose(run: RunKey, dose: int, dose_dir: Path, asked: dict[str, Any], data: WorldData, stage0: Stage0,
              cache: Path, settings: ProofSettings, beat: RunHeartbeat, log_file: TextIO,
              stop: Callable[[], bool]) -> dict[str, Any]:
    """Stage 1 from one dose and the evaluation; dose_dir/result.json (kept if it matches ``asked``)."""
    earlier = read_json_with(dose_dir / RESULT, {"asked", "dose"})
    if earlier is not None and earlier["asked"] == asked and earlier["dose"] == dose:
        logger.info("%s: dose %d already done in %s", run.describe(), dose, dose_dir)
        return earlier
    arm = ARMS[run.arm]
    loaded: LoadedModel = load_model(str(stage0.model_dir(dose)), device=settings.device)
    trained: dict[str, Any] = {"steps": 0, "best_step": None}
    seconds = {"train": 0.0}
    if arm.loss is not None:
        if stop():
            raise RunStopped()
        started = time.perf_counter()

        def log(record: dict[str, Any]) -> None:
            log_file.write(json.dumps({**record, "step": beat.offset + record["step"], "dose": dose,
                                       "dose_step": record["step"]}) + "\n")
            log_file.flush()

        config = stage1_config(settings, cache, arm, run.seed, str(stage0.model_dir(dose)))
        outcome = train(config, data.positives("train"), data.positives("val"), dose_dir, model=loaded, stop=stop,
                        heartbeat=beat, log=log)
        if outcome.interrupted:
            raise RunStopped()
        seconds["train"] = time.perf_counter() - started
        summary = json.loads((dose_dir / "metrics.json").read_text(encoding="utf-8"))
        trained = {"steps": summary["steps"], "best_step": summary["best_step"],
                   "best_val_loss": summary["best_val_loss"]}
        loaded = load_model(str(outcome.best_dir), device=settings.device)

    beat.beat(phase="evaluating")
    started = time.perf_counter()
    evaluation = evaluate_model(loaded, data, settings, cache)
    seconds["eval"] = time.perf_counter() - started
    (dose_dir / "eval").mkdir(parents=True, exist_ok=True)
    evaluation.scores.to_csv(dose_dir / "eval" / "scores.csv", index=False)
    summary = evaluation.summary()
    write_json(dose_dir / "eval" / "metrics.json", {**evaluation.report, **{k: summary[k] for k, _ in METRICS}})
    result = {"dose": dose, "stage0_val_loss": stage0.val_loss[dose], **trained, **summary,
              "seconds": {k: round(v, 2) for k, v in seconds.items()}, "asked": asked}
    write_json(dose_dir / RESULT, result)
    logger.info("%s, dose %d: ROC-AUC %.3f, name accuracy %.3f, image AUC %.3f (other person) %.3f (nobody)",
                run.describe(), dose, summary["roc_auc"], summary["name_accuracy"], summary["image_auc_person"],
                summary["image_auc_empty"])
    return result
