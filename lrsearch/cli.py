"""The `lrsearch` command line. Library commands (no server needed):

    lrsearch schedules                 list the families
    lrsearch schedules show NAME       parameters, bounds, search ranges, formula (JSON)
    lrsearch preview NAME --params '{"max_lr": 0.1}' --epochs 10 --steps-per-epoch 50
    lrsearch range-test --dataset digits [--model mlp --optimizer sgd --min-lr ... --max-lr ...]
    lrsearch train --dataset digits --schedule one_cycle --params '{"max_lr": 0.3}'
    lrsearch demo                      range test on digits, then one-cycle training with its
                                       suggestion, all local

Errors print the library's message (which names the argument and value) and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from lrsearch.errors import LRSearchError


def _json_arg(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def cmd_schedules(args: argparse.Namespace) -> None:
    from lrsearch import schedules

    if args.name is None:
        for name in schedules.names():
            print(f"{name:18} {schedules.spec(name)['formula']}")
    else:
        print(json.dumps(schedules.spec(args.name), indent=2))


def cmd_preview(args: argparse.Namespace) -> None:
    from lrsearch import schedules

    lrs = schedules.curve(args.name, args.params, steps_per_epoch=args.steps_per_epoch,
                          epochs=args.epochs)
    for epoch in range(args.epochs):
        first = lrs[epoch * args.steps_per_epoch]
        last = lrs[(epoch + 1) * args.steps_per_epoch - 1]
        print(f"epoch {epoch:4d}  first step {first:.6g}  last step {last:.6g}")


def _range_test(args: argparse.Namespace) -> dict[str, Any]:
    _quiet_tensorflow()
    from lrsearch.range_test import SweepSettings
    from lrsearch.range_test.runner import RangeTestConfig, run

    settings = SweepSettings(args.min_lr, args.max_lr, args.num_iter, args.mode,
                             args.diverge_threshold)
    return run(RangeTestConfig(dataset=args.dataset, model=args.model,
                               model_params=args.model_params, optimizer=args.optimizer,
                               batch_size=args.batch_size, settings=settings,
                               repeats=args.repeats, seed=args.seed, data_dir=args.data_dir))


def _print_suggestions(result: dict[str, Any]) -> None:
    for key, value in result["suggestions"].items():
        median = value["median"]
        shown = "-" if median is None else f"{median:.3g}"
        print(f"{key:14} {shown}  (from {value['n']} repeat(s))")


def cmd_range_test(args: argparse.Namespace) -> None:
    result = _range_test(args)
    if args.json:
        print(json.dumps(result))
        return
    sweep = result["sweeps"][0]
    print(f"swept {len(sweep['lrs'])} learning rates"
          + (" (stopped early: the loss diverged)" if sweep["diverged"] else ""))
    _print_suggestions(result)


def _train(args: argparse.Namespace, schedule: str, params: dict[str, Any]) -> None:
    _quiet_tensorflow()
    from lrsearch.training import TrainConfig, train

    config = TrainConfig(dataset=args.dataset, schedule=schedule, schedule_params=params,
                         model=args.model, model_params=args.model_params,
                         optimizer=args.optimizer, epochs=args.epochs,
                         batch_size=args.batch_size, seed=args.seed, data_dir=args.data_dir)
    result = train(config, on_epoch_end=lambda r: print(
        f"epoch {r.epoch:3d}  lr {r.lr_first:.4g}->{r.lr_last:.4g}  loss {r.loss:.4f}  "
        f"val_loss {r.val_loss:.4f}  val_accuracy {r.val_metric:.4f}  {r.seconds:.1f}s"))
    best = max(r.val_metric or 0.0 for r in result.epochs)
    print(f"best val_accuracy {best:.4f}")


def cmd_train(args: argparse.Namespace) -> None:
    _train(args, args.schedule, args.params)


def cmd_demo(args: argparse.Namespace) -> None:
    print("LR range test on digits with an MLP (SGD):")
    result = _range_test(args)
    _print_suggestions(result)
    bounds = result["family_bounds"].get("one_cycle", {}).get("max_lr")
    max_lr = 0.1 if bounds is None else (bounds["low"] * bounds["high"]) ** 0.5
    print(f"\nOne-cycle training with max_lr={max_lr:.3g} (middle of the suggested range):")
    _train(args, "one_cycle", {"max_lr": max_lr})


def _common(p: argparse.ArgumentParser, epochs: int = 5) -> None:
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default="mlp")
    p.add_argument("--model-params", type=_json_arg, default={})
    p.add_argument("--optimizer", default="sgd")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=os.environ.get("LRSEARCH_DATA_DIR"))


def _sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--max-lr", type=float, default=10.0)
    p.add_argument("--num-iter", type=int, default=100)
    p.add_argument("--mode", default="exp", choices=["exp", "linear"])
    p.add_argument("--diverge-threshold", type=float, default=4.0)
    p.add_argument("--repeats", type=int, default=1)


Extend = Callable[[Any], None]


def parser(extend: Extend | None = None, extra_help: str = "") -> argparse.ArgumentParser:
    """The library commands; `extend(subparsers)` adds more (the service's commands)."""
    root = argparse.ArgumentParser(prog="lrsearch", description=f"{__doc__}{extra_help}",
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = root.add_subparsers(dest="command", required=True)
    p = sub.add_parser("schedules", help="list the families, or show one")
    p.add_argument("action", nargs="?", choices=["show"])
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_schedules)
    p = sub.add_parser("preview", help="the LR per epoch of a schedule")
    p.add_argument("name")
    p.add_argument("--params", type=_json_arg, default={})
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--steps-per-epoch", type=int, required=True)
    p.set_defaults(func=cmd_preview)
    p = sub.add_parser("range-test", help="run an LR range test locally")
    _common(p)
    _sweep_args(p)
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.set_defaults(func=cmd_range_test)
    p = sub.add_parser("train", help="train one schedule locally")
    _common(p)
    p.add_argument("--schedule", required=True)
    p.add_argument("--params", type=_json_arg, default={})
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("demo", help="range test, then one-cycle training, on digits")
    _common(p)
    _sweep_args(p)
    p.set_defaults(func=cmd_demo)
    if extend is not None:
        extend(sub)
    return root


def main(argv: Sequence[str] | None = None, extend: Extend | None = None,
         extra_help: str = "") -> int:
    root = parser(extend, extra_help)
    args = root.parse_args(argv)
    if args.command == "schedules" and args.action == "show" and args.name is None:
        root.error("schedules show needs a family name")
    try:
        args.func(args)
    except LRSearchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
