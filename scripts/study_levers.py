#!/usr/bin/env python
"""Which lever moves MaskDP's accuracy? Seeds x variants on the quickstart data, chosen on validation.

Each variant changes one thing from the quickstart defaults (init, number of private records,
lambda_priv, the private optimizer's learning rate, public view); every variant runs with every
seed at one budget, and the table reports the mean ± std of the *validation* accuracy (what
choices are made on) next to the test accuracy (reported, never used to choose).

    python scripts/study_levers.py --epsilon 1 --seeds 3 --out study.json
    python scripts/study_levers.py --variants init=scratch private_grad_weight=0.01 --settings maskdp public_only

Data come from the quickstart's anonymization cache (the first run fills it).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

DEFAULT_VARIANTS = [
    "baseline",
    "init=scratch",
    "num_train=60",
    "num_train=120",
    "private_grad_weight=0.01",
    "private_grad_weight=1.0",
    "private_learning_rate=0.02",
    "private_learning_rate=0.2",
    "private_optim=adamw_torch,private_optim_args=none,private_learning_rate=0.001,private_grad_weight=0.01",
    "public_view=drop",
]


def parse_variant(text: str) -> dict:
    """`name=value[,name=value]` -> QuickstartConfig overrides, typed like the fields; `baseline` -> {}."""
    from dataclasses import fields

    from hf_maskdp.quickstart import QuickstartConfig

    if text == "baseline":
        return {}
    kinds = {f.name: f.type for f in fields(QuickstartConfig)}
    overrides = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name not in kinds:
            raise SystemExit(f"unknown QuickstartConfig field {name!r}")
        kind = kinds[name]
        if value == "none":
            overrides[name] = None
        else:
            overrides[name] = int(value) if kind == "int" else float(value) if kind == "float" else value
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regime", default="ntu", choices=("ntu", "ucf"))
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--settings", nargs="+", default=["maskdp", "dpsgd", "public_only"])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    parser.add_argument(
        "--sizes",
        type=int,
        nargs=3,
        metavar=("TRAIN", "VAL", "TEST"),
        default=(240, 48, 96),
        help="clips per split of the study's data (the variants' num_train takes a subset)",
    )
    parser.add_argument("--out", default="study_levers.json")
    args = parser.parse_args()

    import tempfile

    from hf_maskdp import quickstart as qs

    rows = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else []
    done = {(r["variant"], r["setting"], r["seed"]) for r in rows}
    num_train, num_val, num_test = args.sizes
    base = qs.QuickstartConfig(
        regimes=(args.regime,), num_train=num_train, num_val=num_val, num_test=num_test, progress=False
    )
    original = qs._generate(base, args.regime)
    anonymized, _ = qs._anonymize_cached(original, base, args.regime)
    for variant in args.variants:
        config = qs.QuickstartConfig(**{**vars(base), **parse_variant(variant), "progress": False})
        data = {
            "original": qs._keyed(original, f"{args.regime}/original"),
            "anonymized": qs._keyed(anonymized, f"{args.regime}/anonymized"),
        }
        for name in data:  # fewer private records: the first num_train of each training split
            data[name]["train"] = data[name]["train"].select(range(min(config.num_train, len(data[name]["train"]))))
        collator = qs._MemoCollator(config)
        for setting in args.settings:
            for seed in range(args.seeds):
                if (variant, setting, seed) in done:
                    continue
                train_data = "original" if setting == "dpsgd" else "anonymized"
                target = args.epsilon if setting in ("dpsgd", "maskdp") else None
                run = dict(setting=setting, train_data=train_data, target=target, seed=seed)
                with tempfile.TemporaryDirectory() as scratch:
                    row = qs._train_and_evaluate(args.regime, run, data, collator, config, Path(scratch))
                rows.append({"variant": variant, **row})
                Path(args.out).write_text(json.dumps(rows, indent=2))  # a crash loses at most one run
                print(
                    f"{variant:28s} {setting:12s} seed {seed}: val {row['val_accuracy_original']:.3f} "
                    f"test {row['test_accuracy_original']:.3f} public-view test {row['test_accuracy_public_view']:.3f}",
                    flush=True,
                )
    print(table(rows))


def table(rows: list[dict]) -> str:
    lines = [
        "| variant | setting | seeds | val acc. (original) | test acc. (original) | test acc. (public view) |",
        "|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["setting"]), []).append(row)
    for (variant, setting), members in groups.items():
        cells = []
        for key in ("val_accuracy_original", "test_accuracy_original", "test_accuracy_public_view"):
            values = [m[key] for m in members]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.3f} ± {spread:.3f}")
        lines.append(f"| {variant} | `{setting}` | {len(members)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
