"""Trial checkpoints (lrsearch.checkpoints) in real Keras training: every variable survives a
save and a restore bit for bit, a resumed run continues at the exact optimizer step (so its
schedule does), an adaptive family's callback state carries over, and a checkpoint of another
configuration, a half-written one or a corrupt one is never resumed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from lrsearch import checkpoints
from lrsearch.errors import CheckpointUnusable, TrainingPaused
from lrsearch.schedules import curve
from lrsearch.spec import RunSpec
from lrsearch.training import CheckpointPlan, EpochRecord, TrainConfig, steps_per_epoch, train


class Stop(Exception):
    """What a worker's kill looks like to the run: it ends inside an epoch's hook."""


def _config(folder: Path, resume: bool, schedule: str, params: dict[str, Any], epochs: int,
            batch_size: int = 250, attempt: int = 1) -> TrainConfig:
    """A run checkpointing into `folder`; with `resume`, from the newest checkpoint there of
    the same configuration, as the worker picks it (or from epoch 0 when there is none)."""
    spec = RunSpec.builtin("synthetic_argmax", batch_size=batch_size)
    raw = {"spec": spec.stored(), "schedule": schedule, "schedule_params": params,
           "epochs": epochs}
    fingerprint = checkpoints.fingerprint(raw)
    found = checkpoints.latest(folder, fingerprint) if resume else None
    return TrainConfig(spec, schedule=schedule, schedule_params=params, epochs=epochs, seed=7,
                       checkpoint=CheckpointPlan(str(folder), fingerprint,
                                                 None if found is None else str(found.path),
                                                 attempt))


def _stopped_at(config: TrainConfig, epoch: int) -> list[EpochRecord]:
    """Train until `epoch`'s hook, which raises (the checkpoint after epoch-1 is on disk)."""
    seen: list[EpochRecord] = []

    def hook(record: EpochRecord) -> None:
        if record.epoch == epoch:
            raise Stop
        seen.append(record)

    with pytest.raises(Stop):
        train(config, on_epoch_end=hook)
    return seen


def test_a_resumed_run_goes_on_at_the_exact_step_of_its_schedule(tmp_path: Path) -> None:
    params = {"lr0": 0.2, "k": 0.5, "per_epoch": False}
    spe, epochs = steps_per_epoch(1000, 250), 5
    lrs = curve("exponential", params, steps_per_epoch=spe, epochs=epochs)
    first = _stopped_at(_config(tmp_path, False, "exponential", params, epochs), 3)
    saved = checkpoints.latest(tmp_path)
    assert saved is not None and saved.epochs_done == 3 and saved.attempt == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a000001-e000003"]  # older ones removed

    later: list[EpochRecord] = []
    result = train(_config(tmp_path, True, "exponential", params, epochs, attempt=2),
                   on_epoch_end=later.append)
    assert result.resumed_from == 3
    assert [r.epoch for r in later] == [3, 4]  # only the epochs trained now are reported
    assert [r.epoch for r in result.epochs] == [0, 1, 2, 3, 4]
    assert [r.as_dict() for r in result.epochs[:3]] == [r.as_dict() for r in first]
    for e, record in enumerate(result.epochs):  # a restart at step 0 would fail at epoch 3
        assert record.lr_first == pytest.approx(lrs[e * spe], rel=1e-6)
        assert record.lr_last == pytest.approx(lrs[(e + 1) * spe - 1], rel=1e-6)
    # The last epoch writes no checkpoint (nothing would resume it): epoch 4's is the newest,
    # and the second attempt's first save removed the first attempt's.
    newest = checkpoints.latest(tmp_path)
    assert newest is not None and newest.epochs_done == 4 and newest.attempt == 2
    assert [p.name for p in tmp_path.iterdir()] == ["a000002-e000004"]


def test_reduce_on_plateau_keeps_its_state_across_a_resume(tmp_path: Path) -> None:
    # Every epoch after the first is a plateau (min_delta beyond any improvement): the LR halves
    # after epochs 1, 2, ... If the callback's `best` were reset on resume, epoch 2 would count
    # as an improvement and the LR would stay at 0.05 for epoch 3.
    params = {"lr0": 0.1, "factor": 0.5, "patience": 0, "min_delta": 100.0, "monitor": "loss"}
    uninterrupted = train(_config(tmp_path / "a", False, "reduce_on_plateau", params, 4, 500))
    _stopped_at(_config(tmp_path / "b", False, "reduce_on_plateau", params, 4, 500), 2)
    resumed = train(_config(tmp_path / "b", True, "reduce_on_plateau", params, 4, 500, 2))
    assert resumed.resumed_from == 2
    expected = [0.1, 0.1, 0.05, 0.025]
    assert [r.lr_first for r in uninterrupted.epochs] == pytest.approx(expected)
    assert [r.lr_first for r in resumed.epochs] == pytest.approx(expected)


def test_every_model_and_optimizer_variable_is_restored_exactly(tmp_path: Path) -> None:
    def build() -> keras.Model:
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8),
                                  keras.layers.BatchNormalization(), keras.layers.Dropout(0.3),
                                  keras.layers.Dense(3, activation="softmax")])
        schedule = keras.optimizers.schedules.CosineDecay(0.1, 50)
        model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy")
        model.optimizer.build(model.trainable_variables)
        return model

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 3, 64)
    trained = build()
    trained.fit(x, y, batch_size=16, epochs=2, verbose=0)
    records = [{"epoch": 0, "lr_first": 0.1, "lr_last": 0.09, "seconds": 1.0, "metrics": {}}]
    checkpoints.save(tmp_path, model=trained, callbacks=[], records=records,
                     fingerprint="f", seed=3, steps_per_epoch=4)
    fresh = build()
    saved = checkpoints.latest(tmp_path, "f")
    assert saved is not None and saved.seed == 3 and saved.records == records
    checkpoints.restore_variables(saved, fresh)
    assert int(fresh.optimizer.iterations) == 8  # 2 epochs x 4 steps: the schedule's step
    for a, b in [*zip(trained.variables, fresh.variables, strict=True),
                 *zip(trained.optimizer.variables, fresh.optimizer.variables, strict=True)]:
        assert np.array_equal(np.asarray(a), np.asarray(b)), a.path

    other = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    other.compile(keras.optimizers.Adam(0.1), "mse")
    other.optimizer.build(other.trainable_variables)
    with pytest.raises(ValueError, match="holds 9 model variables; the run has 2"):
        checkpoints.restore_variables(saved, other)


def test_another_configuration_or_a_broken_checkpoint_is_never_resumed(tmp_path: Path) -> None:
    params = {"lr": 0.05}
    _stopped_at(_config(tmp_path, False, "constant", params, 4), 2)
    assert checkpoints.latest(tmp_path) is not None
    # Other parameters: another fingerprint, so the worker finds nothing and starts over.
    fresh = train(_config(tmp_path, True, "constant", {"lr": 0.07}, 3, attempt=2))
    assert fresh.resumed_from == 0 and len(fresh.epochs) == 3

    _stopped_at(_config(tmp_path / "x", False, "constant", params, 4), 2)
    (newest,) = (tmp_path / "x").iterdir()
    meta = json.loads((newest / "meta.json").read_text())
    state = (newest / "state.npz").read_bytes()

    def planted(name: str, meta_: dict[str, Any], state_: bytes | None) -> Path:
        folder = tmp_path / name / "a000001-e000002"
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text(json.dumps(meta_))
        if state_ is not None:
            (folder / "state.npz").write_bytes(state_)
        return folder.parent

    assert checkpoints.latest(planted("no-state", meta, None)) is None  # half-written
    assert checkpoints.latest(planted("truncated", meta, state[: len(state) // 2])) is None
    gap = {**meta, "records": [meta["records"][0], {**meta["records"][1], "epoch": 5}]}
    assert checkpoints.latest(planted("gap", gap, state)) is None  # an epoch skipped
    assert checkpoints.latest(planted("bad-json", meta, state)) is not None
    (tmp_path / "bad-json" / "a000001-e000002" / "meta.json").write_text("{not json")
    assert checkpoints.latest(tmp_path / "bad-json") is None

    # Laid out on other steps per epoch (the data changed): the run refuses the checkpoint it
    # was told to resume from, rather than train from another point than the worker recorded.
    (newest / "meta.json").write_text(json.dumps({**meta, "steps_per_epoch": 99}))
    with pytest.raises(CheckpointUnusable, match="99 steps per epoch"):
        train(_config(tmp_path / "x", True, "constant", params, 4, attempt=2))
    # A checkpoint that passes its checks but holds another model's variables: refused too.
    other = train(TrainConfig(RunSpec.builtin("synthetic_argmax", model_params={"hidden": [7]},
                                              batch_size=250),
                              schedule="constant", schedule_params=params, epochs=4, seed=7,
                              checkpoint=CheckpointPlan(str(tmp_path / "other"), "f")),
                  on_epoch_end=lambda r: None)
    assert other.epochs
    foreign = checkpoints.latest(tmp_path / "other")
    assert foreign is not None
    config = _config(tmp_path / "x", False, "constant", params, 4, attempt=3)
    assert config.checkpoint is not None
    (newest / "meta.json").write_text(json.dumps(
        {**json.loads((foreign.path / "meta.json").read_text()),
         "fingerprint": config.checkpoint.fingerprint}))
    (newest / "state.npz").write_bytes((foreign.path / "state.npz").read_bytes())
    plan = CheckpointPlan(config.checkpoint.folder, config.checkpoint.fingerprint,
                          str(newest), 3)
    with pytest.raises(CheckpointUnusable, match="could not be restored"):
        train(TrainConfig(config.spec, schedule="constant", schedule_params=params, epochs=4,
                          seed=7, checkpoint=plan))


def test_a_writer_that_lost_its_claim_never_removes_a_later_attempts_checkpoint(
        tmp_path: Path) -> None:
    params = {"lr": 0.05}
    _stopped_at(_config(tmp_path, False, "constant", params, 6, attempt=1), 2)
    later = _stopped_at(_config(tmp_path, True, "constant", params, 6, attempt=2), 4)
    assert [r.epoch for r in later] == [2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["a000002-e000004"]
    # The first attempt's worker, frozen and woken up, writes on into the same folder: each of
    # its saves removes only its own older ones, and readers still take attempt 2's.
    _stopped_at(_config(tmp_path, False, "constant", params, 6, attempt=1), 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a000001-e000003", "a000002-e000004"]
    newest = checkpoints.latest(tmp_path)
    assert newest is not None and (newest.attempt, newest.epochs_done) == (2, 4)


def test_a_pause_waits_for_a_saved_checkpoint(tmp_path: Path) -> None:
    """A run asked to pause stops only after an epoch whose checkpoint was written: where it
    cannot be written (here a file stands where the folder should be), it trains on."""
    params = {"lr": 0.05}
    with pytest.raises(TrainingPaused) as info:
        train(_config(tmp_path / "ok", False, "constant", params, 4),
              pause_after_epoch=lambda: True)
    assert info.value.epoch == 0
    assert checkpoints.latest(tmp_path / "ok") is not None
    (tmp_path / "blocked").write_text("not a folder")
    result = train(_config(tmp_path / "blocked" / "slot", False, "constant", params, 3),
                   pause_after_epoch=lambda: True)
    assert len(result.epochs) == 3


def test_folders_are_keyed_by_server_made_ids_only(tmp_path: Path) -> None:
    assert checkpoints.trial_dir(tmp_path, "ab12", 3) == tmp_path / "ab12" / "slot-3"
    for bad in ("../x", "AB", "a/b", ""):
        with pytest.raises(ValueError):
            checkpoints.trial_dir(tmp_path, bad, 0)
    for study in ("aa", "bb", "cc"):
        (tmp_path / study / "slot-0").mkdir(parents=True)
    (tmp_path / "not-a-study").mkdir()
    assert sorted(checkpoints.sweep(tmp_path, lambda: {"bb"})) == ["aa", "cc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bb", "not-a-study"]


def test_a_mixed_float16_run_resumes_with_its_loss_scale(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Under mixed_float16 (what a GPU worker runs for mixed_precision, forced here on the CPU)
    Keras wraps the optimizer in a LossScaleOptimizer, whose loss scale is part of the
    checkpoint: the resumed run restores it and goes on at the exact step."""
    from lrsearch import runtime

    monkeypatch.setattr(runtime, "precision_policy", lambda mixed, device: "mixed_float16"
                        if mixed else "float32")
    params = {"lr0": 0.2, "k": 0.5, "per_epoch": False}
    spe, epochs = steps_per_epoch(1000, 250), 3
    lrs = curve("exponential", params, steps_per_epoch=spe, epochs=epochs)

    def config(resume: bool, attempt: int) -> TrainConfig:
        plain = _config(tmp_path, resume, "exponential", params, epochs, attempt=attempt)
        spec = plain.spec.model_copy(update={"mixed_precision": True})
        raw = {"spec": spec.stored(), "schedule": "exponential", "schedule_params": params,
               "epochs": epochs}
        fingerprint = checkpoints.fingerprint(raw)
        found = checkpoints.latest(tmp_path, fingerprint) if resume else None
        assert plain.checkpoint is not None
        return TrainConfig(spec, schedule="exponential", schedule_params=params,
                           epochs=epochs, seed=7,
                           checkpoint=CheckpointPlan(str(tmp_path), fingerprint,
                                                     None if found is None else
                                                     str(found.path), attempt))

    try:
        _stopped_at(config(False, 1), 2)
        saved = checkpoints.latest(tmp_path)
        assert saved is not None and saved.epochs_done == 2
        result = train(config(True, 2))
    finally:
        keras.config.set_dtype_policy("float32")
    assert result.resumed_from == 2 and result.provenance["precision_policy"] == \
        "mixed_float16"
    for e, record in enumerate(result.epochs):
        assert record.lr_first == pytest.approx(lrs[e * spe], rel=1e-6)
        assert record.lr_last == pytest.approx(lrs[(e + 1) * spe - 1], rel=1e-6)


def test_options_at_their_defaults_leave_the_fingerprint_as_it_was() -> None:
    """A checkpoint written before mixed_precision and jit_compile existed still matches the
    same run; setting either option makes it another run."""
    spec = RunSpec.builtin("digits").stored()
    raw = {"spec": spec, "schedule": "constant", "schedule_params": {"lr": 0.1}, "epochs": 2}
    before = {**raw, "spec": {k: v for k, v in spec.items()
                              if k not in ("mixed_precision", "jit_compile")}}
    assert checkpoints.fingerprint(raw) == checkpoints.fingerprint(before)
    for option in ({"mixed_precision": True}, {"jit_compile": True}, {"jit_compile": False}):
        assert checkpoints.fingerprint({**raw, "spec": {**spec, **option}}) != \
            checkpoints.fingerprint(raw)
