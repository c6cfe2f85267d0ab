"""Fine-tuning CLIP with the paper's counterfactual loss (or a comparison loss), one process or many.

``data`` (which items train and with which counterfactuals), ``freezing`` (frozen layers, the schedule),
``step`` (one step's forward pass, the validation loss), ``checkpoint`` (saved models, the resumable
state), ``setup`` (everything a run needs, and its record) and ``loop`` (``train``: setup, then the loop).
"""

from transformers import CLIPModel

from cftclip_core.specs.training import SCHEDULES, TrainConfig
from cftclip_core.training.checkpoint import (
    LAST_DIR,
    RESUME_MAY_CHANGE,
    SNAPSHOTS_DIR,
    TRAINER_STATE,
    load_trainer_state,
    save_model,
)
from cftclip_core.training.data import (
    Batch,
    Collate,
    ContrastiveTrainingSet,
    DataReport,
    counterfactual_recipe,
    swap_counterfactuals,
    table_counterfactuals,
    world_names,
)
from cftclip_core.training.freezing import PERIODIC_T_MAX, FreezeReport, freeze, lr_factor
from cftclip_core.training.loop import run_loop, train
from cftclip_core.training.setup import Run, TrainResult, seed_everything, setup_run
from cftclip_core.training.step import FeatureModel, batch_loss, validation_loss

__all__ = [
    "LAST_DIR", "PERIODIC_T_MAX", "RESUME_MAY_CHANGE", "SCHEDULES", "SNAPSHOTS_DIR", "TRAINER_STATE", "Batch",
    "CLIPModel", "Collate", "ContrastiveTrainingSet", "DataReport", "FeatureModel", "FreezeReport", "Run",
    "TrainConfig", "TrainResult", "batch_loss", "counterfactual_recipe", "freeze", "load_trainer_state", "run_loop",
    "lr_factor", "save_model", "seed_everything", "setup_run", "swap_counterfactuals", "table_counterfactuals", "train",
    "validation_loss", "world_names",
]
