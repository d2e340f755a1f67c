"""``python -m ml_training train --data data --out models [--quick]``"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ml_training", description="Offline training of the demand model"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train, backtest and export a model version into a model repository")
    t.add_argument(
        "--data",
        type=Path,
        default=Path("data"),
        help="data directory (dadosSuprimentos.xlsx or consumption.parquet/.csv + external/) or a file",
    )
    t.add_argument("--out", type=Path, default=Path("models"), help="model repository root")
    t.add_argument("--name", default="demand_forecast", help="model name in the repository")
    t.add_argument("--horizon", type=int, default=4, help="weeks ahead")
    t.add_argument(
        "--quick",
        action="store_true",
        help="small but real model: materials subset, few trees, short backtest, no baselines",
    )
    t.add_argument("--no-baselines", action="store_true", help="skip the statsforecast baselines")
    t.add_argument(
        "--publish-card",
        type=Path,
        default=None,
        metavar="DOCS_DIR",
        help="also copy the card to DOCS_DIR/model-card.md (+ DOCS_DIR/model-card/*.png); the default is "
        "docs/ for a full run on the real export",
    )
    syn = sub.add_parser(
        "synthetic",
        help="the same measurements on the synthetic company-scale history (bench/gen_company_history.py)",
    )
    syn.add_argument("--out", type=Path, default=Path(".nova/models-synthetic"), help="model repository root")
    syn.add_argument(
        "--work", type=Path, default=Path(".nova/bench/ml-synthetic"), help="generated history (reused)"
    )
    syn.add_argument("--scale", type=float, default=None, help="generation scale (lines x 20 M)")
    syn.add_argument("--regenerate", action="store_true", help="generate again even if the file exists")
    syn.add_argument(
        "--publish-card",
        type=Path,
        default=None,
        metavar="DOCS_DIR",
        help="write DOCS_DIR/model-card/synthetic.json, the figures the real-data card shows",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )

    if args.command == "synthetic":
        from ml_training.synthetic import SYNTHETIC_SCALE, train_synthetic

        res = train_synthetic(
            args.work,
            args.out,
            SYNTHETIC_SCALE if args.scale is None else args.scale,
            args.regenerate,
            publish_card=args.publish_card,
        )
        print(res.version_dir)
        return 0

    from ml_training.pipeline import RunConfig, train

    publish = args.publish_card
    if (
        publish is None
        and not args.quick
        and args.data.is_dir()
        and (args.data / "dadosSuprimentos.xlsx").is_file()
    ):
        publish = Path("docs")
    cfg = RunConfig(
        data=args.data,
        out=args.out,
        name=args.name,
        horizon=args.horizon,
        quick=args.quick,
        baselines=not args.no_baselines,
        publish_card=publish,
    )
    result = train(cfg)
    print(result.version_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
