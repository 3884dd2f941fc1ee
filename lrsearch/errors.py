"""One exception hierarchy for the library.

Every message names the argument and the value, Keras-style:
"Argument `warmup_epochs` must be < `epochs`. Received: warmup_epochs=12, epochs=10".
"""

from __future__ import annotations


class LRSearchError(ValueError):
    """Base class of every error the library raises on purpose.

    It subclasses ValueError so callers that already catch bad-argument errors keep working.
    `field` names the offending argument (or None when the error is about the whole request).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def require_int(name: str, value: object, low: int, error: type[LRSearchError]) -> None:
    """The one check for whole-number arguments: an int (not a bool) >= low."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise error(f"Argument `{name}` must be an integer >= {low}. Received: "
                    f"{name}={value!r}", field=name)


class ScheduleError(LRSearchError):
    """Bad schedule family, parameter, value or search range."""


class DatasetError(LRSearchError):
    """Unknown dataset, missing file, or a file whose contents fail validation."""


class ModelError(LRSearchError):
    """Unknown model or bad model parameters for the dataset's shape."""


class TrainingError(LRSearchError):
    """Bad training configuration (optimizer, epochs, batch size, ...)."""


class TrainingDiverged(LRSearchError):
    """The training loss became NaN or infinite. `epoch` is the 0-based epoch it happened in."""

    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(
            f"Training diverged: the loss became {loss} in epoch {epoch}.", field="loss"
        )
        self.epoch = epoch
        self.loss = loss


class TrainingCancelled(LRSearchError):
    """The caller asked training to stop; raised at the end of `epoch` (0-based)."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"Training cancelled after epoch {epoch}.")
        self.epoch = epoch


class RangeTestError(LRSearchError):
    """Bad range-test settings (min_lr, max_lr, num_iter, mode, ...)."""
