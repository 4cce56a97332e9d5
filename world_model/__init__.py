"""World model: a 2-D physics simulator, a JEPA trained on it, and the
serving API (predict / surprise / plan, micro-batched).

Entry points: `world_model.train.main` (worldstate train),
`world_model.evaluate.main` (worldstate eval), `WorldModel` and
`MicroBatcher` for serving. This package imports nothing from `consistency`,
`api` or `service`.
"""
from .batching import MicroBatcher
from .checkpoints import (CheckpointError, CheckpointIntegrityError, CheckpointNotFound, CheckpointStore,
                          make_manifest)
from .config import Config, Physics, default_config, tiny_config
from .errors import InvalidInput, WorldModelError
from .inference import Plan, Prediction, SurpriseResult, WorldModel
from .train import TrainResult, train

__all__ = [
    "CheckpointError", "CheckpointIntegrityError", "CheckpointNotFound", "CheckpointStore", "Config",
    "InvalidInput", "MicroBatcher", "Physics", "Plan", "Prediction", "SurpriseResult", "TrainResult",
    "WorldModel", "WorldModelError", "default_config", "make_manifest", "tiny_config", "train",
]
