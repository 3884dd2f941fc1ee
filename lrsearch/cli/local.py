"""Commands that need no server: the schedule catalog and local runs.

    lrsearch schedules [list] | show NAME | preview NAME --params JSON --epochs E
             --steps-per-epoch S [--png FILE]
    lrsearch local range-test --dataset digits [--json] [--plot FILE]
    lrsearch local train --dataset digits --schedule one_cycle --params '{"max_lr": 0.3}'
    lrsearch local demo      range test on digits, then one-cycle training with its suggestion
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lrsearch.cli.output import JsonObject, console, print_suggestions, write_png
from lrsearch.history import metric_columns


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@click.group("schedules")
def schedules_group() -> None:
    """The schedule families: list (what `lrsearch schedules` alone does), show one, preview a
    curve."""


@schedules_group.command("list")
def schedules_list() -> None:
    """Every family with its formula."""
    from rich.table import Table

    from lrsearch import schedules

    table = Table("family", "formula", box=None)
    for name in schedules.names():
        table.add_row(name, schedules.spec(name)["formula"])
    console().print(table)


@schedules_group.command("show")
@click.argument("name")
def schedules_show(name: str) -> None:
    """One family's parameters, bounds, search ranges and formula (JSON)."""
    from lrsearch import schedules

    click.echo(json.dumps(schedules.spec(name), indent=2))


@schedules_group.command("preview")
@click.argument("name")
@click.option("--params", type=JsonObject(), default="{}", help="the family's parameters")
@click.option("--epochs", type=click.IntRange(1), required=True)
@click.option("--steps-per-epoch", type=click.IntRange(1), required=True)
@click.option("--png", "png_path", type=click.Path(dir_okay=False, path_type=Path),
              help="also draw the curve to this PNG file")
def schedules_preview(name: str, params: dict[str, Any], epochs: int, steps_per_epoch: int,
                      png_path: Path | None) -> None:
    """The LR at the first and last step of every epoch."""
    from lrsearch import schedules

    lrs = schedules.curve(name, params, steps_per_epoch=steps_per_epoch, epochs=epochs)
    for epoch in range(epochs):
        first = lrs[epoch * steps_per_epoch]
        last = lrs[(epoch + 1) * steps_per_epoch - 1]
        click.echo(f"epoch {epoch:4d}  first step {first:.6g}  last step {last:.6g}")
    if png_path is not None:
        from lrsearch import plots

        write_png(png_path, plots.png(plots.schedule(name, params, epochs=epochs,
                                                     steps_per_epoch=steps_per_epoch)))


def _training_options(epochs: int = 5) -> Callable[[Any], Any]:
    def wrap(f: Any) -> Any:
        for option in reversed([
            click.option("--dataset", default="digits", show_default=True),
            click.option("--model", default="mlp", show_default=True),
            click.option("--model-params", type=JsonObject(), default="{}"),
            click.option("--optimizer", default="sgd", show_default=True),
            click.option("--batch-size", type=int, default=32, show_default=True),
            click.option("--epochs", type=int, default=epochs, show_default=True),
            click.option("--seed", type=int, default=0, show_default=True),
            click.option("--data-dir", envvar="LRSEARCH_DATA_DIR",
                         help="where offline dataset files are (LRSEARCH_DATA_DIR)"),
        ]):
            f = option(f)
        return f
    return wrap


def _sweep_options(f: Any) -> Any:
    for option in reversed([
        click.option("--min-lr", type=float, default=1e-5, show_default=True),
        click.option("--max-lr", type=float, default=10.0, show_default=True),
        click.option("--num-iter", type=int, default=100, show_default=True),
        click.option("--mode", type=click.Choice(["exp", "linear"]), default="exp",
                     show_default=True),
        click.option("--diverge-threshold", type=float, default=4.0, show_default=True),
        click.option("--repeats", type=int, default=1, show_default=True),
    ]):
        f = option(f)
    return f


def _range_test(o: dict[str, Any]) -> dict[str, Any]:
    _quiet_tensorflow()
    from lrsearch.range_test import SweepSettings
    from lrsearch.range_test.runner import RangeTestConfig, run

    settings = SweepSettings(o["min_lr"], o["max_lr"], o["num_iter"], o["mode"],
                             o["diverge_threshold"])
    return run(RangeTestConfig(_spec(o), settings=settings, repeats=o["repeats"],
                               data_dir=o["data_dir"]))


def _spec(o: dict[str, Any]) -> Any:
    from lrsearch.spec import RunSpec

    # val_loss: logged whatever the dataset's task (val_accuracy is not, for float targets)
    return RunSpec.builtin(o["dataset"], o["model"], o["model_params"],
                           optimizer=o["optimizer"], batch_size=o["batch_size"], seed=o["seed"],
                           objective="val_loss")


def _train(o: dict[str, Any], schedule: str, params: dict[str, Any]) -> None:
    _quiet_tensorflow()
    from lrsearch.training import TrainConfig, train

    config = TrainConfig(_spec(o), schedule=schedule, schedule_params=params,
                         epochs=o["epochs"], data_dir=o["data_dir"])
    result = train(config, on_epoch_end=lambda r: click.echo(_epoch_line(r)))
    for name, better in (("val_accuracy", max), ("val_loss", min), ("loss", min)):
        values = [v for r in result.epochs if (v := r.metrics.get(name)) is not None]
        if values:
            click.echo(f"best {name} {better(values):.4f}")
            return


def _epoch_line(r: Any) -> str:
    """One epoch: the LR at its first and last step, every metric Keras logged (loss first),
    the seconds."""
    shown = "  ".join(f"{name} {'-' if r.metrics[name] is None else f'{r.metrics[name]:.4f}'}"
                      for name in metric_columns([{"metrics": r.metrics}]))
    return f"epoch {r.epoch:3d}  lr {r.lr_first:.4g}->{r.lr_last:.4g}  {shown}  {r.seconds:.1f}s"


@click.group("local")
def local_group() -> None:
    """Run the library here, without a server (range test, one training, a demo)."""


@local_group.command("range-test")
@_training_options()
@_sweep_options
@click.option("--json", "as_json", is_flag=True, help="print the whole result as JSON")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="draw the curve with the suggestions to this PNG file")
def local_range_test(as_json: bool, plot_path: Path | None, **o: Any) -> None:
    """An LR range test in this process."""
    result = _range_test(o)
    if plot_path is not None:
        from lrsearch import plots

        write_png(plot_path, plots.png(plots.range_test(result)))
    if as_json:
        click.echo(json.dumps(result))
        return
    sweep = result["sweeps"][0]
    click.echo(f"swept {len(sweep['lrs'])} learning rates"
               + (" (stopped early: the loss diverged)" if sweep["diverged"] else ""))
    print_suggestions(result["suggestions"])


@local_group.command("train")
@_training_options()
@click.option("--schedule", required=True, help="a schedule family")
@click.option("--params", type=JsonObject(), default="{}", help="the family's parameters")
def local_train(schedule: str, params: dict[str, Any], **o: Any) -> None:
    """Train one schedule in this process, printing every epoch."""
    _train(o, schedule, params)


@local_group.command("demo")
@_training_options()
@_sweep_options
def local_demo(**o: Any) -> None:
    """A range test on digits, then one-cycle training in the middle of its suggested range."""
    click.echo("LR range test on digits with an MLP (SGD):")
    result = _range_test(o)
    print_suggestions(result["suggestions"])
    bounds = result["family_bounds"].get("one_cycle", {}).get("max_lr")
    max_lr = 0.1 if bounds is None else (bounds["low"] * bounds["high"]) ** 0.5
    click.echo(f"\nOne-cycle training with max_lr={max_lr:.3g} (middle of the suggested "
               "range):")
    _train(o, "one_cycle", {"max_lr": max_lr})


def register(cli: click.Group) -> None:
    cli.add_command(schedules_group)
    cli.add_command(local_group)
