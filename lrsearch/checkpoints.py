"""Trial checkpoints: what a trial needs to go on from its last finished epoch on another
worker (a scale-down, a preempted node, a killed worker), with its schedule at the exact step.

A checkpoint holds every variable of the model (weights, batch-norm statistics, the seed
generators' states) and of the optimizer (its step counter `iterations`, which every schedule
reads, its slots, and for adaptive families the learning-rate variable), the state of the
adaptive family's callback (ReduceLROnPlateau's wait, cooldown and best), the epoch records
trained so far, the run's seed, and a fingerprint of what the run trains, so that a checkpoint
is only ever resumed by the same configuration.

Layout, under a trial's own folder (`trial_dir`: <root>/<study id>/slot-<slot>):

    a000002-e000003/state.npz   the variables, model's as m0..mN then optimizer's as o0..oM
    a000002-e000003/meta.json   everything else (`Checkpoint`), with state.npz's SHA-256

where 2 is the claim attempt that wrote it and 3 the epochs completed. A checkpoint is written
into a temporary folder beside it and renamed into place, so a reader (or a worker killed
half-way through writing) never sees half of one. A writer removes only what its own attempt
wrote before and what earlier attempts wrote: a worker that lost its claim but writes on (a
frozen VM that wakes up) never deletes the new owner's checkpoints, and readers take the
newest attempt's newest checkpoint first (`latest`). `latest()` needs no TensorFlow: the
worker's parent process picks the checkpoint and hands its exact folder to the child, which
restores that one or fails with CheckpointUnusable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrsearch.digests import sha256_file

FORMAT = 2
STATE, META = "state.npz", "meta.json"
_NAME = re.compile(r"^a(\d{6,})-e(\d{6,})$")
_STUDY_ID = re.compile(r"[0-9a-f]{1,64}")  # the server's hex ids: a study's folder name
# The attributes of an adaptive family's Keras callback that carry state across epochs
# (keras.callbacks.ReduceLROnPlateau; on_train_begin resets them, so they are restored after).
CALLBACK_STATE = ("wait", "cooldown_counter", "best")


def trial_dir(root: str | Path, study_id: str, slot: int) -> Path:
    """The folder of one trial slot's checkpoints. `study_id` is a server-made hex id; anything
    else is refused rather than joined into a path."""
    if not _STUDY_ID.fullmatch(study_id) or not 0 <= int(slot) < 2**31:
        raise ValueError(f"not a study id and slot: {study_id!r}, {slot!r}")
    return Path(root) / study_id / f"slot-{int(slot)}"


# RunSpec options added after checkpoints existed, at their default values.
SPEC_DEFAULTS_LEFT_OUT: dict[str, Any] = {"mixed_precision": False, "jit_compile": "auto"}


def fingerprint(config: Mapping[str, Any]) -> str:
    """What a run trains, hashed: the RunSpec (data, model, optimizer, objective, batch size),
    the schedule family and its parameters, and the number of epochs (a trial's config as the
    worker hands it to its child). The seed is not part of it: a resumed trial continues with
    the checkpoint's."""
    keys = ("spec", "schedule", "schedule_params", "epochs")
    hashed = {k: config.get(k) for k in keys}
    if isinstance(hashed["spec"], Mapping):
        # Options at their defaults are left out, so a checkpoint written before an option
        # existed still matches the same run.
        hashed["spec"] = {k: v for k, v in hashed["spec"].items()
                          if not (k in SPEC_DEFAULTS_LEFT_OUT and SPEC_DEFAULTS_LEFT_OUT[k] == v)}
    text = json.dumps(hashed, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as meta.json describes it. `epochs_done` epochs are trained (the next is
    epoch number `epochs_done`); `records` are their EpochRecord dicts, in order."""

    path: Path
    epochs_done: int
    fingerprint: str
    seed: int
    steps_per_epoch: int
    records: list[dict[str, Any]]
    callbacks: list[dict[str, Any]]
    attempt: int

    @property
    def state_file(self) -> Path:
        return self.path / STATE


def read(path: str | Path, fingerprint: str | None = None) -> Checkpoint | None:
    """The checkpoint in folder `path` (with this `fingerprint`, when given); None when it is
    incomplete, damaged (state.npz not the file meta.json describes), of another run, or not
    one this code wrote."""
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            return None
        if fingerprint is not None and meta["fingerprint"] != fingerprint:
            return None
        records = list(meta["records"])
        done = int(meta["epochs_done"])
        if done != len(records) or [int(r["epoch"]) for r in records] != list(range(done)):
            return None  # the records must be epochs 0..done-1, each once
        if sha256_file(path / STATE) != meta["sha256"]:
            return None  # truncated, or written over
        return Checkpoint(path, done, str(meta["fingerprint"]), int(meta["seed"]),
                          int(meta["steps_per_epoch"]), records, list(meta["callbacks"]),
                          int(meta["attempt"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _entries(folder: Path) -> list[tuple[int, int, str]]:
    """(attempt, epochs, name) of the checkpoint folders in `folder`, newest first."""
    found = []
    for name in os.listdir(folder):
        if m := _NAME.match(name):
            found.append((int(m.group(1)), int(m.group(2)), name))
    return sorted(found, reverse=True)


def latest(folder: str | Path | None, fingerprint: str | None = None) -> Checkpoint | None:
    """The trial's checkpoint to resume from: the newest attempt's newest complete one (with
    this `fingerprint`, when given), or None."""
    if folder is None:
        return None
    try:
        entries = _entries(Path(folder))
    except OSError:
        return None
    for _, _, name in entries:
        found = read(Path(folder) / name, fingerprint)
        if found is not None:
            return found
    return None


def discard(checkpoint: Checkpoint) -> None:
    """Delete one checkpoint (one that could not be restored), so that the next attempt takes
    an older one or starts over."""
    shutil.rmtree(checkpoint.path, ignore_errors=True)


def remove(folder: str | Path | None) -> None:
    """Delete a trial's checkpoints (its folder), and its study's folder once empty."""
    if folder is None:
        return
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        Path(folder).parent.rmdir()  # only succeeds when no other slot has checkpoints


def slots(root: str | Path, study_id: str) -> list[int]:
    """The slots of a study that have a checkpoint folder."""
    try:
        names = os.listdir(Path(root) / study_id)
    except OSError:
        return []
    return sorted(int(n[5:]) for n in names if re.fullmatch(r"slot-\d{1,10}", n))


def sweep(root: str | Path, active: Callable[[], set[str]]) -> list[str]:
    """Delete the checkpoint folders of every study that `active()` does not name (deleted or
    ended studies: no trial of theirs will resume); returns the study ids removed. The folder
    is listed before `active()` is asked, so that a study created in between (its folder made
    after the listing) is never swept."""
    try:
        names = [n for n in os.listdir(root) if _STUDY_ID.fullmatch(n)]
    except OSError:
        return []
    if not names:
        return []
    keep = active()
    removed = [n for n in names if n not in keep]
    for name in removed:
        shutil.rmtree(Path(root) / name, ignore_errors=True)
    return removed


def _json_number(value: Any) -> Any:
    """A callback attribute as JSON: floats as floats (inf kept as the string "inf")."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else repr(number)


def save(folder: str | Path, *, model: Any, callbacks: Sequence[Any],
         records: Sequence[Mapping[str, Any]], fingerprint: str, seed: int,
         steps_per_epoch: int, attempt: int = 0) -> Path:
    """Write the model's, optimizer's and callbacks' state after `len(records)` epochs;
    returns the checkpoint's folder. Imports numpy only (the variables are Keras')."""
    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done = len(records)
    final = folder / f"a{attempt:06d}-e{done:06d}"
    tmp = folder / f".tmp-a{attempt:06d}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        arrays = {f"m{i}": np.asarray(v) for i, v in enumerate(model.variables)}
        arrays |= {f"o{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)}
        with open(tmp / STATE, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        meta = {"format": FORMAT, "epochs_done": done, "fingerprint": fingerprint,
                "seed": seed, "steps_per_epoch": steps_per_epoch, "attempt": attempt,
                "sha256": sha256_file(tmp / STATE),
                "records": [dict(r) for r in records],
                "callbacks": [{a: _json_number(getattr(c, a)) for a in CALLBACK_STATE
                               if hasattr(c, a)} for c in callbacks]}
        with open(tmp / META, "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # the same epoch again (trained anew after a failed save)
            shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Older checkpoints of this attempt and everything of earlier attempts (whose writers, if
    # still running, lost their claim); never a later attempt's.
    for name in os.listdir(folder):
        m = _NAME.match(name) or re.match(r"^\.tmp-a(\d{6,})-()", name)
        if m and name != final.name and int(m.group(1)) <= attempt:
            shutil.rmtree(folder / name, ignore_errors=True)
    return final


def restore_variables(checkpoint: Checkpoint, model: Any) -> None:
    """Assign the checkpoint's variables to a compiled `model` whose optimizer is built (same
    architecture and optimizer, as the fingerprint guarantees); ValueError if they differ."""
    import numpy as np

    with np.load(checkpoint.state_file, allow_pickle=False) as stored:
        for prefix, variables in (("m", model.variables), ("o", model.optimizer.variables)):
            names = sorted((k for k in stored.files if k.startswith(prefix)),
                           key=lambda k: int(k[1:]))
            if len(names) != len(variables):
                raise ValueError(f"checkpoint {checkpoint.path.name} holds {len(names)} "
                                 f"{'model' if prefix == 'm' else 'optimizer'} variables; the "
                                 f"run has {len(variables)}")
            for name, variable in zip(names, variables, strict=True):
                value = stored[name]
                if tuple(value.shape) != tuple(variable.shape):
                    raise ValueError(f"checkpoint variable {variable.path} has shape "
                                     f"{value.shape}; the run's is {tuple(variable.shape)}")
                variable.assign(value)


def restore_callbacks(checkpoint: Checkpoint, callbacks: Sequence[Any]) -> None:
    """Put the adaptive callbacks' state back (after their on_train_begin reset it)."""
    for callback, state in zip(callbacks, checkpoint.callbacks, strict=False):
        for name, value in state.items():
            if name in CALLBACK_STATE and value is not None:
                setattr(callback, name, float(value) if name == "best" else int(value))
