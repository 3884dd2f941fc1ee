"""One exception hierarchy for the library.

Every message names the argument and the value, Keras-style:
"Argument `warmup_epochs` must be < `epochs`. Received: warmup_epochs=12, epochs=10".
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import overload


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


class TrainingPaused(LRSearchError):
    """The caller asked training to stop at the end of `epoch` (0-based) to go on elsewhere:
    raised after that epoch's checkpoint is written (lrsearch.training)."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"Training paused after epoch {epoch}; it resumes from its "
                         "checkpoint.")
        self.epoch = epoch


class CheckpointUnusable(LRSearchError):
    """The checkpoint a run was told to resume from cannot be restored (gone, damaged, of
    another architecture, laid out on other steps per epoch); the worker discards it and the
    trial is retried (lrsearch.checkpoints)."""


class ObjectiveNotLogged(LRSearchError):
    """The objective metric is not among the metrics the compiled model logs (found after its
    first epoch). A study fails fast on it: every trial would fail the same way."""

    def __init__(self, metric: str, logged: list[str]) -> None:
        super().__init__(f"The objective metric `{metric}` is not logged by the model. It logs: "
                         f"{', '.join(logged)}. Choose one of those (objective.metric), or add "
                         "the metric to the model's metrics.", field="objective.metric")
        self.metric, self.logged = metric, logged


class RangeTestError(LRSearchError):
    """Bad range-test settings (min_lr, max_lr, num_iter, mode, ...)."""


# An absolute POSIX path: a "/" that does not continue a word, a URL ("https://"), a label
# ("<data_dir>/"), a home ("~/") or a relative path ("a/b"), then any characters up to a space,
# a quote or a bracket. Paths with spaces are cut at the space, so only their tail can remain.
# Also a path after a scheme-like prefix that is not a URL ("file:/srv/x", "tf:/srv/x") and
# the path of a file URL ("file:///srv/x").
_ABSOLUTE = re.compile(r"(?:(?<![\w.:/~>\-])|(?<=file://)|(?<=\w:)(?!//))"
                       r"/[^\s'\"`,;()\[\]<>|]*")


Roots = (Mapping[str, str] | Mapping[os.PathLike[str], str]
         | Mapping[str | os.PathLike[str], str] | None)  # a folder -> its label


@overload
def redact_paths(text: str, roots: Roots = None) -> str: ...


@overload
def redact_paths(text: None, roots: Roots = None) -> None: ...


def redact_paths(text: str | None, roots: Roots = None) -> str | None:
    """`text` with no absolute file path left in it, for messages shown to people who must not
    learn the server's file layout (a tenant reading an error or a failure reason).

    A path under one of `roots` (a folder -> its label, e.g. data_dir -> "<data_dir>") keeps its
    part below the root: "/srv/data/mnist.npz" -> "<data_dir>/mnist.npz". Any other absolute
    path becomes its last component: "/usr/lib/python3/site.py" -> "site.py". URLs, relative
    paths and text already redacted are left alone, so redacting twice changes nothing.
    None stays None.
    """
    if not text:
        return text
    labelled = sorted(((os.path.abspath(os.fspath(root)).rstrip("/"), label)
                       for root, label in (roots or {}).items()), key=lambda r: -len(r[0]))

    def replace(match: re.Match[str]) -> str:
        path = match.group(0)
        for root, label in labelled:
            if root and (path == root or path.startswith(root + "/")):
                return label + path[len(root):]
        tail = path.rstrip("/").rsplit("/", 1)[-1]
        return tail or "/"

    return _ABSOLUTE.sub(replace, text)
