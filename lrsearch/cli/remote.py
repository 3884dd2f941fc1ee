"""Commands that talk to a server through lrsearch.client.Client.

    lrsearch submit --family one_cycle --dataset digits --epochs 5 --n-trials 10 [--wait]
    lrsearch submit --file study.yaml [--wait]          (flags override the file)
    lrsearch status [ID] [--wide]     one study, or the list
    lrsearch trials ID [--number N] [--wide]   lrsearch best ID [--wide]
    lrsearch export ID --format csv|json [--output FILE]
    lrsearch plot ID --kind history -o h.png
    lrsearch cancel ID       lrsearch delete ID
    lrsearch range-test --dataset digits [--wait] [--plot lr_find.png]
    lrsearch range-test cancel ID   lrsearch range-test delete ID
    lrsearch datasets [list] | upload NAME FILE.npz | roots | register NAME SOURCE | delete NAME
    lrsearch models [list] | upload NAME FILE.keras | show NAME | delete NAME

Tables fit the terminal (lrsearch.cli.output: a column that does not fit is left out and named
under the table); `--wide` shows every column.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lrsearch.cli.output import (
    JsonObject,
    StudyProgress,
    console,
    export_csv,
    export_json,
    export_records,
    history_view,
    objective_direction,
    objective_metric,
    print_best,
    print_suggestions,
    print_view,
    progress_line,
    studies_view,
    study_table,
    trials_view,
    write_png,
)
from lrsearch.client import PLOT_KINDS, Client, ClientError


def remote(f: Callable[..., Any]) -> Callable[..., Any]:
    """--url and --api-key (or LRSEARCH_URL / LRSEARCH_API_KEY), passed on as `client`."""
    def run(url: str | None, api_key: str | None, **kwargs: Any) -> Any:
        with Client(url, api_key) as client:
            return f(client=client, **kwargs)

    run.__name__, run.__doc__ = f.__name__, f.__doc__
    run = click.option("--api-key", envvar="LRSEARCH_API_KEY", show_envvar=True,
                       help="API key (needed once the server has keys)")(run)
    return click.option("--url", envvar="LRSEARCH_URL", show_envvar=True,
                        help="server address [default: http://127.0.0.1:8000]")(run)


def _load_spec(path: Path) -> dict[str, Any]:
    """A study or range-test body from a .json, .yaml or .yml file."""
    import yaml

    text = path.read_text()
    try:
        spec = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise click.BadParameter(f"{path} is not valid {path.suffix[1:].upper()}: {e}",
                                 param_hint="--file") from None
    if not isinstance(spec, dict):
        raise click.BadParameter(f"{path} must hold a mapping (the request body), got "
                                 f"{type(spec).__name__}", param_hint="--file")
    return spec


def _named(current: Any, name: str | None, params: dict[str, Any] | None, default: str
           ) -> dict[str, Any] | None:
    """{"name", "params"} from --X and --X-params on top of the file's `current` value (the
    server's default name when neither gives one); None when no flag was given."""
    if name is None and params is None:
        return None
    out: dict[str, Any] = dict(current) if isinstance(current, dict) else {"name": default}
    if name is not None:
        out["name"] = name
    if params is not None:
        out["params"] = params
    return out


def _model_and_optimizer(spec: dict[str, Any], model: str | None,
                         model_params: dict[str, Any] | None, optimizer: str | None,
                         optimizer_params: dict[str, Any] | None, upload: str | None = None,
                         init: str | None = None, loss: str | None = None,
                         metrics: str | None = None) -> dict[str, Any]:
    """The `model`, `optimizer`, `loss` and `metrics` entries the flags set (for _merge):
    --upload NAME [--init fresh] names an uploaded model instead of --model."""
    if upload is not None and model is not None:
        raise click.BadParameter("give --model or --upload, not both", param_hint="--upload")
    chosen: dict[str, Any] | None = _named(spec.get("model"), model, model_params, "mlp")
    if upload is not None:
        chosen = {"upload": upload, "init": init or "uploaded"}
    return {"model": chosen,
            "optimizer": _named(spec.get("optimizer"), optimizer, optimizer_params, "sgd"),
            "loss": loss,
            "metrics": [m.strip() for m in metrics.split(",") if m.strip()] if metrics
            else None}


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--model/--upload and what trains it, shared by submit and range-test."""
    for option in reversed([
        click.option("--model", help="a built-in or plugin model [default: mlp]"),
        click.option("--model-params", type=JsonObject()),
        click.option("--upload", help="an uploaded model's name (lrsearch models upload)"),
        click.option("--init", type=click.Choice(["uploaded", "fresh"]),
                     help="--upload: start from its saved weights [default] or fresh ones"),
        click.option("--optimizer", help="[default: sgd]"),
        click.option("--optimizer-params", type=JsonObject()),
        click.option("--loss", help="a Keras loss [default: the model's own, or the "
                     "dataset's]"),
        click.option("--metrics", help="comma-separated Keras metrics to log"),
        click.option("--mixed-precision/--no-mixed-precision", default=None,
                     help="Keras mixed precision (mixed_float16 on a GPU, mixed_bfloat16 "
                     "without one) [default: off]"),
        click.option("--jit-compile", type=click.Choice(["true", "false", "auto"]),
                     callback=_jit_compile,
                     help="XLA compilation [default: auto, Keras' choice]"),
    ]):
        f = option(f)
    return f


def _jit_compile(ctx: click.Context, param: click.Parameter, value: str | None
                 ) -> bool | str | None:
    """--jit-compile as the API's `jit_compile`: true, false or "auto" (None: not given)."""
    return None if value is None else {"true": True, "false": False}.get(value, value)


def _objective(spec: dict[str, Any], metric: str | None, direction: str | None
               ) -> dict[str, Any] | None:
    """The `objective` that --objective/--direction set on top of the file's (its `objective`
    or the deprecated `metric`/`direction`, which are moved into it); None without flags.
    A new metric drops the file's direction unless --direction gives one (the table infers
    it, or the API asks for it)."""
    if metric is None and direction is None:
        return None
    old_metric, old_direction = spec.pop("metric", None), spec.pop("direction", None)
    current = dict(spec.get("objective") or {"metric": old_metric or "val_accuracy",
                                             "direction": old_direction})
    if metric is not None and metric != current.get("metric"):
        current = {"metric": metric, "direction": None}
    if direction is not None:
        current["direction"] = direction
    return {k: v for k, v in current.items() if v is not None}


def _merge(spec: dict[str, Any], **flags: Any) -> dict[str, Any]:
    """Flags that were given override the file's keys."""
    return {**spec, **{k: v for k, v in flags.items() if v is not None and v != ()}}


# -- studies -------------------------------------------------------------------------------
def _slots(study: dict[str, Any]) -> str:
    """'6 trials' or '6 trials + 2 baseline'."""
    extra = (study.get("n_slots") or study["n_trials"]) - study["n_trials"]
    return f"{study['n_trials']} trials" + (f" + {extra} baseline" if extra else "")


@click.command("submit")
@click.option("--file", "spec_file", type=click.Path(exists=True, dir_okay=False,
                                                     path_type=Path),
              help="the study as JSON or YAML (the body of POST /v1/studies)")
@click.option("--family", "families", multiple=True,
              help="a schedule family; repeat for a cross-family search")
@click.option("--dataset")
@model_options
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--n-trials", type=int)
@click.option("--objective", "metric", help="the metric to optimise, as Keras logs it "
              "(val_accuracy, val_mae, val_auc, ...) [default: val_accuracy]")
@click.option("--direction", type=click.Choice(["maximize", "minimize"]),
              help="needed for metrics outside README's table")
@click.option("--sampler", type=click.Choice(["tpe", "random", "grid", "cmaes", "qmc"]))
@click.option("--pruner", type=click.Choice(["median", "hyperband", "successive_halving",
                                             "none"]))
@click.option("--search-space", type=JsonObject(),
              help='per family: {"one_cycle": {"max_lr": {"low": 0.01, "high": 1}}}')
@click.option("--range-test-id", help="search inside this range test's bounds")
@click.option("--seed", type=int)
@click.option("--max-total-epochs", type=int, help="budget: stop after this many epochs "
              "trained in all")
@click.option("--max-seconds", type=float, help="budget: stop this many seconds after the "
              "first trial started")
@click.option("--patience", type=int, help="budget: stop after this many finished trials "
              "without a better value")
@click.option("--baseline/--no-baseline", default=None, help="tune a constant LR beside the "
              "schedules and report the gain over it [default: on unless a family is "
              "`constant`]")
@click.option("--baseline-trials", type=int, help="the baseline's trials [default: a quarter "
              "of --n-trials, at least 2]")
@click.option("--confirm", "confirm_top_k", type=int, help="after the search, retrain the top "
              "K configurations and the best constant LR with fresh seeds (opt-in)")
@click.option("--confirm-seeds", type=int, help="seeds per configuration for --confirm "
              "[default: 3]")
@click.option("--name")
@click.option("--idempotency-key", help="retrying with the same key never submits twice")
@click.option("--wait", is_flag=True, help="show progress until it ends, then the best")
@click.option("--timeout", type=float, default=None, help="--wait: give up after seconds")
@click.option("--poll", type=float, default=2.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables")
@click.option("-q", "--quiet", is_flag=True, help="print only the study's id")
@remote
def submit(client: Client, spec_file: Path | None, families: tuple[str, ...],
           model: str | None, model_params: dict[str, Any] | None, upload: str | None,
           init: str | None, optimizer: str | None, optimizer_params: dict[str, Any] | None,
           loss: str | None, metrics: str | None, metric: str | None, direction: str | None,
           sampler: str | None, pruner: str | None, max_total_epochs: int | None,
           max_seconds: float | None, patience: int | None, baseline: bool | None,
           baseline_trials: int | None, confirm_top_k: int | None,
           confirm_seeds: int | None, idempotency_key: str | None, wait: bool,
           timeout: float | None, poll: float,
           as_json: bool, quiet: bool, **flags: Any) -> None:
    """Submit a schedule search (a study)."""
    spec = _load_spec(spec_file) if spec_file else {}
    given = {"max_epochs": max_total_epochs, "max_seconds": max_seconds, "patience": patience}
    if any(v is not None for v in given.values()):
        spec["budget"] = {**(spec.get("budget") or {}),
                          **{k: v for k, v in given.items() if v is not None}}
    if baseline is not None or baseline_trials is not None:
        spec["baseline"] = {**(spec.get("baseline") or {}),
                            **({"enabled": baseline} if baseline is not None else {}),
                            **({"trials": baseline_trials} if baseline_trials is not None
                               else {})}
    if confirm_top_k is not None or confirm_seeds is not None:
        spec["confirm"] = {**(spec.get("confirm") or {}),
                           **({"top_k": confirm_top_k} if confirm_top_k is not None else {}),
                           **({"seeds": confirm_seeds} if confirm_seeds is not None else {})}
    if families:
        spec.pop("family", None)
        spec.pop("families", None)
        if len(families) == 1:
            spec["family"] = families[0]
        else:
            spec["families"] = list(families)
    objective = _objective(spec, metric, direction)
    spec = _merge(spec, **_model_and_optimizer(spec, model, model_params, optimizer,
                                               optimizer_params, upload, init, loss, metrics),
                  objective=objective,
                  sampler={**spec.get("sampler", {}), "name": sampler} if sampler else None,
                  pruner={"name": pruner} if pruner else None, **flags)
    study = client.submit(spec, idempotency_key=idempotency_key)
    if quiet and not wait:
        click.echo(study["id"])
        return
    if not wait:
        if as_json:
            click.echo(json.dumps(study))
        else:
            click.echo(f"submitted study {study['id']} ({_slots(study)}); "
                       f"`lrsearch status {study['id']}` to follow it")
        return
    click.echo(f"submitted study {study['id']} ({_slots(study)})", err=True)
    _wait_and_report(client, study["id"], timeout, poll, as_json)


def _wait_and_report(client: Client, study_id: str, timeout: float | None, poll: float,
                     as_json: bool) -> None:
    view = StudyProgress(client.study(study_id))
    try:
        study = client.wait(study_id, timeout=timeout, poll=poll, on_progress=view.update)
    finally:
        view.close()
    if study["best"] is None:
        raise ClientError("no_result", f"study {study_id} ended {study['status']} without a "
                          f"completed trial{': ' + study['error'] if study['error'] else ''}")
    best = client.best(study_id)
    if as_json:
        click.echo(json.dumps(best))
    else:
        console().print(f"study {study_id} {study['status']}: {progress_line(study)}")
        print_best(best)
    if study["status"] != "succeeded":
        raise ClientError(study["status"], f"study {study_id} ended {study['status']}"
                          f"{': ' + study['error'] if study['error'] else ''}")


@click.command("wait")
@click.argument("study_id")
@click.option("--timeout", type=float, default=None)
@click.option("--poll", type=float, default=2.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@remote
def wait_cmd(client: Client, study_id: str, timeout: float | None, poll: float,
             as_json: bool) -> None:
    """Follow a submitted study until it ends, then print its best schedule."""
    _wait_and_report(client, study_id, timeout, poll, as_json)


WIDE_HELP = "every column, however wide (the table fits the terminal otherwise)"


@click.command("status")
@click.argument("study_id", required=False)
@click.option("--status", "only", type=click.Choice(["queued", "running", "succeeded",
                                                     "failed", "cancelled"]),
              help="list: only studies with this status")
@click.option("--wide", is_flag=True, help=WIDE_HELP)
@click.option("--json", "as_json", is_flag=True)
@remote
def status(client: Client, study_id: str | None, only: str | None, wide: bool,
           as_json: bool) -> None:
    """One study's status and progress, or the list of studies."""
    if study_id is None:
        page = client.studies(status=only, limit=100)
        if as_json:
            click.echo(json.dumps(page))
        else:
            print_view(studies_view(page["items"]), wide)
        return
    study = client.study(study_id)
    if as_json:
        click.echo(json.dumps(study))
    else:
        console().print(study_table(study))


@click.command("trials")
@click.argument("study_id")
@click.option("--number", type=int, default=None,
              help="one trial (its Optuna number), with every metric per epoch")
@click.option("--baseline", is_flag=True, help="with --number: a trial of the constant-LR "
              "baseline (numbered in its own Optuna study)")
@click.option("--wide", is_flag=True, help=WIDE_HELP)
@click.option("--json", "as_json", is_flag=True)
@remote
def trials(client: Client, study_id: str, number: int | None, baseline: bool, wide: bool,
           as_json: bool) -> None:
    """Every trial of a study, best first: state, value, one column per searched parameter
    (those with one value in every trial of a family are shown once, above), failure reason;
    or one trial's history (--number)."""
    if number is not None:
        trial = client.trial(study_id, number, "baseline" if baseline else "search")
        if as_json:
            click.echo(json.dumps(trial))
            return
        study = client.study(study_id)
        metric = objective_metric(study)
        out = console()
        what = "Baseline trial" if baseline else "Trial"
        print_view(trials_view([trial], metric, objective_direction(study),
                               f"{what} #{number}"), wide, out)
        print_view(history_view(trial.get("history") or [], f"Trial #{number} per epoch",
                                metric), wide, out)
        return
    items = client.all_trials(study_id)
    if as_json:
        click.echo(json.dumps(items))
        return
    study = client.study(study_id)
    print_view(trials_view(items, objective_metric(study), objective_direction(study)), wide)


@click.command("export")
@click.argument("study_id")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="the file to write [default: standard output]")
@remote
def export(client: Client, study_id: str, fmt: str, output: Path | None) -> None:
    """Every trial of a study (search, baseline and confirmation runs: `role`) as CSV or JSON:
    slot, number, family, state, value, attempt, seed, duration_s, failure_reason, every
    parameter (CSV: a `param.<name>` column each; JSON: `params`) and the metrics of its last
    epoch (`metric.<name>`; JSON: `metrics`). The API serves no history for confirmation runs:
    theirs are empty."""
    trials = client.all_trials(study_id)
    histories: dict[int, list[dict[str, Any]] | None] = {}
    for t in trials:
        # One request per trial: the trial list carries no metrics. A confirmation run has no
        # Optuna number to ask for; a queued one has no history yet.
        if t.get("number") is not None and t.get("role", "search") in ("search", "baseline"):
            histories[t["slot"]] = client.trial(study_id, t["number"],
                                                t.get("role", "search")).get("history") or []
    records = export_records(trials, histories)
    text = export_csv(records) if fmt == "csv" else export_json(records)
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8", newline="")
    click.echo(f"wrote {output} ({len(records)} trials, {fmt})", err=True)


@click.command("best")
@click.argument("study_id")
@click.option("--wide", is_flag=True, help=WIDE_HELP)
@click.option("--json", "as_json", is_flag=True, help="everything: curves, Keras config")
@remote
def best(client: Client, study_id: str, wide: bool, as_json: bool) -> None:
    """The best schedule so far: parameters and the Keras snippet."""
    result = client.best(study_id)
    if as_json:
        click.echo(json.dumps(result))
    else:
        print_best(result, wide)


@click.command("plot")
@click.argument("study_id")
@click.option("--kind", type=click.Choice(PLOT_KINDS), default="lr_curves", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="the PNG file to write")
@remote
def plot(client: Client, study_id: str, kind: str, output: Path) -> None:
    """Draw a study's plot to a PNG file (rendered by the server)."""
    write_png(output, client.study_plot(study_id, kind))


@click.command("cancel")
@click.argument("study_id")
@remote
def cancel(client: Client, study_id: str) -> None:
    """Cancel a study: queued trials now, running ones at their next epoch."""
    study = client.cancel(study_id)
    click.echo(f"study {study['id']} {study['status']}")


@click.command("delete")
@click.argument("study_id")
@remote
def delete(client: Client, study_id: str) -> None:
    """Delete a finished study with its trials and curves."""
    client.delete(study_id)
    click.echo(f"deleted study {study_id}")


# -- range tests ---------------------------------------------------------------------------
# A group that also runs on its own: `lrsearch range-test --dataset ...` starts or follows a
# range test, `lrsearch range-test cancel|delete ID` manage one.
@click.group("range-test", invoke_without_command=True)
@click.option("--file", "spec_file", type=click.Path(exists=True, dir_okay=False,
                                                     path_type=Path),
              help="the range test as JSON or YAML (the body of POST /v1/range-tests)")
@click.option("--dataset")
@model_options
@click.option("--batch-size", type=int)
@click.option("--min-lr", type=float)
@click.option("--max-lr", type=float)
@click.option("--num-iter", type=int)
@click.option("--mode", type=click.Choice(["exp", "linear"]))
@click.option("--repeats", type=int)
@click.option("--validation/--no-validation", default=None,
              help="track a validation batch's loss instead of the training loss")
@click.option("--seed", type=int)
@click.option("--id", "test_id", help="follow an existing range test instead of starting one")
@click.option("--wait", is_flag=True, help="wait for the result and print the suggestions")
@click.option("--timeout", type=float, default=None)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="--wait: draw the curve with the suggestions to this PNG file")
@click.option("--json", "as_json", is_flag=True)
@click.option("-q", "--quiet", is_flag=True, help="print only the range test's id")
@remote
def range_test(client: Client, spec_file: Path | None, model: str | None,
               model_params: dict[str, Any] | None, upload: str | None, init: str | None,
               optimizer: str | None, optimizer_params: dict[str, Any] | None,
               loss: str | None, metrics: str | None, test_id: str | None, wait: bool,
               timeout: float | None, plot_path: Path | None, as_json: bool, quiet: bool,
               **flags: Any) -> None:
    """Run an LR range test on the server's workers (fastai's lr_find, remotely); or
    `cancel` / `delete` one."""
    if click.get_current_context().invoked_subcommand is not None:
        return  # `range-test cancel|delete ID`: only the sub-command runs
    if test_id is None:
        spec = _load_spec(spec_file) if spec_file else {}
        spec = _merge(spec, **_model_and_optimizer(spec, model, model_params, optimizer,
                                                   optimizer_params, upload, init, loss,
                                                   metrics), **flags)
        test = client.range_test(spec)
        test_id = test["id"]
        if quiet and not wait:
            click.echo(test_id)
            return
        click.echo(f"queued range test {test_id}", err=True)
    else:
        test = client.get_range_test(test_id)
    if not wait and plot_path is None:
        if as_json:
            click.echo(json.dumps(test))
        else:
            click.echo(f"range test {test_id} {test['status']}; `lrsearch range-test --id "
                       f"{test_id} --wait` to get the suggestions")
        return
    out = console(stderr=True)
    with out.status(f"range test {test_id}: waiting for a worker") as spinner:
        test = client.wait_range_test(test_id, timeout=timeout, on_progress=lambda t:
                                      spinner.update(f"range test {test_id}: {t['status']}"))
    if test["status"] != "succeeded":
        raise ClientError("failed", f"range test {test_id} failed: {test['error']}")
    if plot_path is not None:
        write_png(plot_path, client.range_test_plot(test_id))
    if as_json:
        click.echo(json.dumps(test))
    else:
        console().print(f"range test {test_id} succeeded")
        print_suggestions(test["suggestions"], test["family_bounds"])


@range_test.command("cancel")
@click.argument("test_id")
@remote
def range_test_cancel(client: Client, test_id: str) -> None:
    """Cancel a range test: a queued one now, a running one as its worker stops it."""
    test = client.cancel_range_test(test_id)
    click.echo(f"range test {test['id']} {test['status']}")


@range_test.command("delete")
@click.argument("test_id")
@remote
def range_test_delete(client: Client, test_id: str) -> None:
    """Delete a finished range test (studies that used its bounds keep them)."""
    client.delete_range_test(test_id)
    click.echo(f"deleted range test {test_id}")


# -- datasets ------------------------------------------------------------------------------
@click.group("datasets")
def datasets() -> None:
    """The server's datasets: list (what `lrsearch datasets` alone does), upload an .npz,
    register files the workers read, delete."""


def _task(dataset: dict[str, Any]) -> str:
    """"10 classes", or "targets" with their shape per sample ("targets 3") when they have one."""
    if dataset.get("task", "classes") == "classes":
        return f"{dataset['num_classes']} classes"
    shape = dataset.get("target_shape") or []
    return " ".join(["targets", "x".join(map(str, shape))]).strip()


@datasets.command("list")
@click.option("--json", "as_json", is_flag=True)
@remote
def datasets_list(client: Client, as_json: bool) -> None:
    """Built-in datasets (with whether their files are present) and your uploads."""
    from rich.table import Table

    items = client.datasets()
    if as_json:
        click.echo(json.dumps(items))
        return
    table = Table("name", "kind", "input shape", "task", "status", box=None)
    for d in items:
        table.add_row(d["name"], _kind(d), "x".join(map(str, d.get("input_shape") or [])),
                      _task(d) if d.get("input_shape") else "", _status(d))
    console().print(table)


def _kind(dataset: dict[str, Any]) -> str:
    if dataset["builtin"]:
        return "built-in"
    source = dataset.get("source")
    return "uploaded" if source is None else str(source.get("kind"))


def _status(dataset: dict[str, Any]) -> str:
    if dataset["builtin"]:
        missing = ", ".join(dataset.get("files") or [])
        return "available" if dataset.get("available", True) else \
            f"missing {missing}: register it (kind keras) or put it in the server's data dir"
    if dataset.get("status") == "failed":
        return f"failed: {dataset.get('error')}"
    return str(dataset.get("status", "ready"))


@datasets.command("upload")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@remote
def datasets_upload(client: Client, name: str, path: Path) -> None:
    """Upload an .npz with x_train, y_train (and optionally x_val, y_val) as NAME."""
    info = client.upload_dataset(name, path)
    click.echo(f"uploaded {info['name']}: {json.dumps(info)}")


@datasets.command("roots")
@remote
def datasets_roots(client: Client) -> None:
    """Where dataset references may point on the workers (one per line)."""
    # One write: a reader that stops after the first line (`| head -n 1`) must not make a
    # later write fail with a broken pipe (click turns that into a silent exit status 1).
    roots = client.data_roots()["roots"]
    if roots:
        click.echo("\n".join(roots))


@datasets.command("register")
@click.argument("name")
@click.argument("source")
@click.option("--wait", "wait_", is_flag=True, help="Wait until a worker has registered it.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this "
              "many seconds.")
@remote
def datasets_register(client: Client, name: str, source: str, wait_: bool,
                      timeout: float | None) -> None:
    """Register files the workers read as dataset NAME. SOURCE is JSON, or @FILE holding it:
    {"kind": "image_folder", "uri": "/data/pets", "image_size": [64, 64]}, {"kind": "csv",
    "uri": ..., "target": "price"}, {"kind": "tfrecord", ...}, {"kind": "npy", ...}, or
    {"kind": "keras", "dataset": "cifar10"} (downloaded by a worker). See the README."""
    text = Path(source[1:]).read_text() if source.startswith("@") else source
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="SOURCE") from None
    info = client.register_dataset(name, parsed)
    if wait_:
        info = client.wait_dataset(name, timeout=timeout)
    click.echo(json.dumps(info))
    if info.get("status") == "failed":
        raise SystemExit(1)


@datasets.command("delete")
@click.argument("name")
@remote
def datasets_delete(client: Client, name: str) -> None:
    """Delete an uploaded dataset (no unfinished study may use it)."""
    client.delete_dataset(name)
    click.echo(f"deleted dataset {name}")


# -- models --------------------------------------------------------------------------------
@click.group("models")
def models() -> None:
    """Models: list (built-in, plugin, uploaded; what `lrsearch models` alone does), upload a
    .keras file, show, delete."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@remote
def models_list(client: Client, as_json: bool) -> None:
    """Every model a study may use, and where it comes from."""
    from rich.table import Table

    items = client.models()
    if as_json:
        click.echo(json.dumps(items))
        return
    table = Table("name", "source", "details", box=None)
    for m in items:
        if m["source"] == "upload":
            shapes = " ".join("x".join("?" if d is None else str(d) for d in s[1:])
                              for s in m.get("input_shapes") or [])
            details = (f"inputs {shapes or '?'}; "
                       + (f"compiled: loss {', '.join(m['loss'])}, metrics "
                          f"{', '.join(m['metrics']) or 'none'}" if m.get("compiled")
                          else "not compiled"))
        else:
            details = ", ".join(f"{p['name']}={p['default']!r}" for p in m["parameters"])
        table.add_row(m["name"], m["source"], details)
    console().print(table)


@models.command("upload")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@remote
def models_upload(client: Client, name: str, path: Path) -> None:
    """Upload a .keras file (model.save) as NAME; use it with --upload NAME."""
    info = client.upload_model(name, path)
    click.echo(f"uploaded model {info['name']} (sha256 {info['sha256'][:12]}): "
               f"{json.dumps(info)}")


@models.command("show")
@click.argument("name")
@remote
def models_show(client: Client, name: str) -> None:
    """One uploaded model, as JSON."""
    click.echo(json.dumps(client.model(name), indent=2))


@models.command("delete")
@click.argument("name")
@remote
def models_delete(client: Client, name: str) -> None:
    """Delete an uploaded model (no unfinished study or range test may use it)."""
    client.delete_model(name)
    click.echo(f"deleted model {name}")


def register(cli: click.Group) -> None:
    for command in (submit, wait_cmd, status, trials, export, best, plot, cancel, delete,
                    range_test, datasets, models):
        cli.add_command(command)
