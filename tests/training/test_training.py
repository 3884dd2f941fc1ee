"""Training one configuration: a real learning check, applied LRs, hooks, divergence."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lrsearch.errors import TrainingCancelled, TrainingDiverged, TrainingError
from lrsearch.schedules import curve, momentum_curve
from lrsearch.spec import RunSpec
from lrsearch.training import EpochRecord, TrainConfig, steps_per_epoch, train


def test_mlp_on_digits_learns() -> None:
    result = train(TrainConfig(RunSpec.builtin("digits", batch_size=32), schedule="constant",
                               schedule_params={"lr": 0.1}, epochs=5))
    assert len(result.epochs) == 5
    assert set(result.epochs[-1].metrics) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert result.epochs[-1].metrics["val_accuracy"] > 0.85
    assert result.epochs[-1].metrics["loss"] < result.epochs[0].metrics["loss"]


def test_recorded_lr_is_what_the_schedule_applied_at_epoch_ends() -> None:
    params = {"lr0": 0.2, "k": 0.5, "per_epoch": False}
    result = train(TrainConfig(RunSpec.builtin("synthetic_argmax", batch_size=250),
                               schedule="exponential", schedule_params=params, epochs=3))
    spe = steps_per_epoch(1000, 250)
    lrs = curve("exponential", params, steps_per_epoch=spe, epochs=3)
    for e, record in enumerate(result.epochs):
        assert record.lr_first == pytest.approx(lrs[e * spe], rel=1e-6)
        assert record.lr_last == pytest.approx(lrs[(e + 1) * spe - 1], rel=1e-6)
        assert record.seconds > 0 and record.metrics["val_loss"] is not None


def test_reduce_on_plateau_lowers_the_recorded_lr() -> None:
    # min_delta larger than any possible improvement: every epoch after the first (which sets
    # the reference value, as in Keras) is a plateau, and patience 0 reduces at once.
    params = {"lr0": 0.1, "factor": 0.5, "patience": 0, "min_delta": 100.0, "monitor": "loss"}
    result = train(TrainConfig(RunSpec.builtin("synthetic_argmax", batch_size=500),
                               schedule="reduce_on_plateau", schedule_params=params, epochs=4))
    assert [r.lr_first for r in result.epochs] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    assert [r.lr_last for r in result.epochs] == pytest.approx([0.1, 0.1, 0.05, 0.025])


def test_hook_sees_every_epoch_and_can_stop_training() -> None:
    class Pruned(Exception):
        pass

    seen: list[EpochRecord] = []

    def hook(record: EpochRecord) -> None:
        seen.append(record)
        if record.epoch == 1:
            raise Pruned

    with pytest.raises(Pruned):
        train(TrainConfig(RunSpec.builtin("synthetic_argmax", batch_size=500), epochs=5),
              on_epoch_end=hook)
    assert [r.epoch for r in seen] == [0, 1]


def test_cancellation_is_checked_each_epoch() -> None:
    calls = []
    with pytest.raises(TrainingCancelled) as info:
        train(TrainConfig(RunSpec.builtin("synthetic_argmax", batch_size=500), epochs=5),
              should_stop=lambda: calls.append(1) or len(calls) >= 2)
    assert info.value.epoch == 1


def test_nan_loss_is_reported_as_diverged_with_its_epoch() -> None:
    with pytest.raises(TrainingDiverged) as info:
        train(TrainConfig(RunSpec.builtin("synthetic_argmax", batch_size=100),
                          schedule="constant", schedule_params={"lr": 1e30}, epochs=3))
    assert info.value.epoch == 0 and "epoch 0" in str(info.value)


@pytest.mark.parametrize("optimizer", ["momentum", "nesterov"])
def test_cycled_momentum_sgd_matches_a_hand_computed_update(optimizer: str) -> None:
    from lrsearch import optimizers
    from lrsearch.schedules.base import Timeline, make
    from lrsearch.schedules.keras import momentum_schedule, to_keras

    params = {"max_lr": 0.5, "cycle_momentum": True, "base_momentum": 0.5, "max_momentum": 0.9}
    spe, epochs = 4, 2
    lr_sched = to_keras("one_cycle", params, steps_per_epoch=spe, epochs=epochs)
    mom_sched = momentum_schedule(make("one_cycle", params), Timeline(spe, epochs))
    opt = optimizers.build(optimizer, {}, lr_sched, mom_sched)
    w = keras.Variable(np.array([1.0, -2.0], dtype="float32"))
    grads = np.array([[0.3, -0.1], [0.2, 0.4], [-0.5, 0.1], [0.05, 0.05]], dtype="float32")
    lrs = curve("one_cycle", params, steps_per_epoch=spe, epochs=epochs)
    mus = momentum_curve("one_cycle", params, steps_per_epoch=spe, epochs=epochs)
    expected, velocity = np.array([1.0, -2.0]), np.zeros(2)
    for s, g in enumerate(grads):
        opt.apply([g], [w])
        velocity = mus[s] * velocity - lrs[s] * g
        expected = expected + (mus[s] * velocity - lrs[s] * g if optimizer == "nesterov"
                               else velocity)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-5)


def test_cycled_beta_1_adam_trains() -> None:
    result = train(TrainConfig(RunSpec.builtin("synthetic_argmax", optimizer="adam",
                                               batch_size=100), schedule="one_cycle",
                               schedule_params={"max_lr": 0.05, "cycle_momentum": True},
                               epochs=2))
    assert len(result.epochs) == 2 and np.isfinite(result.epochs[-1].metrics["loss"])


@pytest.mark.parametrize("kwargs,field", [({"epochs": 0}, "epochs"), ({"seed": -1}, "seed")])
def test_bad_training_config(kwargs: dict, field: str) -> None:
    with pytest.raises(TrainingError) as info:
        TrainConfig(RunSpec.builtin("digits"), **kwargs)
    assert info.value.field == field


def test_an_objective_the_model_does_not_log_stops_after_the_first_epoch() -> None:
    from lrsearch.errors import ObjectiveNotLogged

    spec = RunSpec.builtin("synthetic_argmax", batch_size=500, objective="val_auc")
    with pytest.raises(ObjectiveNotLogged) as info:
        train(TrainConfig(spec, epochs=3))
    assert info.value.logged == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert "val_auc" in str(info.value) and info.value.field == "objective.metric"


def test_bad_optimizer_parameter_and_legacy_decay() -> None:
    from lrsearch import optimizers

    with pytest.raises(TrainingError, match="ignores `decay`"):
        optimizers.resolve_params("sgd", {"decay": 0.01})
    with pytest.raises(TrainingError, match="Known optimizers"):
        optimizers.resolve_params("lion", {})
    with pytest.raises(TrainingError, match=r"momentum=1\.5"):
        optimizers.resolve_params("momentum", {"momentum": 1.5})


def test_a_trial_rerun_with_its_recorded_seed_reproduces_it() -> None:
    """The seed a trial records (spec.trial_seed(number)) decides its initial weights and data
    order: the same seed gives the same curves, another seed other ones."""
    spec = RunSpec.builtin("digits", batch_size=128)

    def metrics(seed: int) -> list[dict[str, float | None]]:
        result = train(TrainConfig(spec, schedule="constant", epochs=1, seed=seed))
        return [dict(record.metrics) for record in result.epochs]

    first = metrics(7)
    assert first == metrics(7)
    assert first[0]["val_loss"] is not None
    assert first != metrics(8)
