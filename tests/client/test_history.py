"""Reading a trial's history as the API returns it: every metric column, loss first, for the
command line's table; entries of a server from before `metrics` read the same."""

from __future__ import annotations

from rich.console import Console

from lrsearch.cli.output import history_view, print_view
from lrsearch.history import epoch_value, metric_columns

NEW = [{"epoch": 0, "lr_first": 0.1, "lr_last": 0.05, "seconds": 1.5,
        "metrics": {"val_mae": 0.4, "mae": 0.5, "val_loss": 1.2, "loss": 1.0}},
       {"epoch": 1, "lr_first": 0.05, "lr_last": 0.01, "seconds": 1.3,
        "metrics": {"loss": 0.8, "val_loss": None, "mae": 0.3, "val_mae": 0.2, "val_auc": 0.9}}]
OLD = [{"epoch": 0, "lr_first": 0.1, "lr_last": 0.05, "seconds": 1.0, "loss": 1.0,
        "val_loss": 1.1, "metric": 0.5, "val_metric": None}]


def test_columns_are_every_name_present_loss_first_each_before_its_val_twin() -> None:
    assert metric_columns(NEW) == ["loss", "val_loss", "val_auc", "mae", "val_mae"]
    assert metric_columns(OLD) == ["loss", "val_loss", "accuracy", "val_accuracy"]
    assert metric_columns([]) == []


def test_values_come_from_metrics_or_from_an_older_servers_fields() -> None:
    assert epoch_value(NEW[1], "val_auc") == 0.9
    assert epoch_value(NEW[0], "val_auc") is None  # not logged that epoch
    assert epoch_value(NEW[1], "val_loss") is None
    assert epoch_value(OLD[0], "accuracy") == 0.5 and epoch_value(OLD[0], "val_accuracy") is None
    assert epoch_value({"epoch": 0, "metrics": {"loss": float("nan")}}, "loss") is None


def test_the_cli_table_shows_every_metric_of_every_epoch() -> None:
    console = Console(width=200, record=True)
    print_view(history_view(NEW, "Trial #3 per epoch"), wide=True, out=console)
    rows = [[cell.strip() for cell in line.replace("┃", "│").split("│")[1:-1]]
            for line in console.export_text().splitlines() if line.startswith(("┃", "│"))]
    assert rows == [
        ["epoch", "lr first", "lr last", "loss", "val_loss", "val_auc", "mae", "val_mae",
         "seconds"],
        ["1", "0.1", "0.05", "1", "1.2", "-", "0.5", "0.4", "1.5"],
        ["2", "0.05", "0.01", "0.8", "-", "0.9", "0.3", "0.2", "1.3"]]
