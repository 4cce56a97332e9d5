"""Named exceptions of the inference API.

Every `InvalidInput` is the caller's fault (map to 4xx, 422 suits most);
`code` is a stable machine-readable name for the problem+json body. Nothing is
changed when one is raised. `BatcherClosed` / `Overloaded` are the server's
state (map to 503).
"""
from __future__ import annotations


class WorldModelError(Exception):
    code = "world_model_error"


class InvalidInput(WorldModelError, ValueError):
    code = "invalid_input"


class BadShape(InvalidInput):
    code = "bad_shape"


class NonFiniteInput(InvalidInput):
    code = "non_finite_input"


class InvalidState(InvalidInput):
    """Radius or mass not positive."""

    code = "invalid_state"


class StateOutsideBox(InvalidInput):
    """A body that is not inside the world's box: the physics puts every disc inside it."""

    code = "state_outside_box"


class SpeedOutOfRange(InvalidInput):
    """A speed or an impulse beyond what the model can step: past MAX_SPEED a body crosses
    half the box in one step and contacts are missed."""

    code = "speed_out_of_range"


class HorizonOutOfRange(InvalidInput):
    code = "horizon_out_of_range"


class TooManyEntities(InvalidInput):
    code = "too_many_entities"


class UnknownEntity(InvalidInput):
    code = "unknown_entity"


class PhysicsOutOfRange(InvalidInput):
    """Constants outside the ranges the model was trained on."""

    code = "physics_out_of_range"


class InvalidGoal(InvalidInput):
    code = "invalid_goal"


class InvalidBudget(InvalidInput):
    code = "invalid_budget"


class QueryTooCostly(InvalidInput):
    """A plan whose work (candidates x steps x bodies and pairs) exceeds what a node does in
    about a second; state.plan_cost says how it is counted."""

    code = "query_too_costly"


class Cancelled(WorldModelError):
    """The caller gave up (its client disconnected); the work stopped at its next check."""

    code = "cancelled"


class BatcherClosed(WorldModelError):
    code = "batcher_closed"


class Overloaded(WorldModelError):
    code = "overloaded"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
