"""`hf-maskdp quickstart [--preset demo|benchmark|fast] [--output-dir DIR]`: the paper's claim, measured.

Generates labelled action clips, anonymizes them (real pose estimation; cached by configuration,
so a rerun does not anonymize again), fine-tunes a VideoMAE pretrained on public clips without
privacy, with DP-SGD, on public views only and with MaskDP over several budgets and seeds, and
writes results.md (mean ± std, the claim lines), results.json, results.png, the MaskDP model and
the anonymized dataset (each with its card) to DIR. Finished runs are logged in DIR/runs.jsonl: rerun
the same command after an interruption and it resumes.

Presets: demo (make demo, <= 10 min on 2 cores), benchmark (>= 1000 private records, two
regimes, every budget with every seed; hours on 2 CPU cores: one regime without the sweep took
95 min), fast (about a minute, for tests).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="run the whole method on the embedded dataset (make demo)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", choices=("demo", "benchmark", "fast"), default="demo")
    parser.add_argument("--fast", action="store_true", help="same as --preset fast")
    parser.add_argument("--output-dir", default="quickstart_output", help="where results, model and dataset go")
    parser.add_argument(
        "--regime",
        action="append",
        choices=("ntu", "ucf"),
        help="ntu: one scene for every action; ucf: scenes hint at the label (repeatable)",
    )
    parser.add_argument("--init", choices=("public", "scratch"), help="public pretraining (default) or random init")
    parser.add_argument("--pretrained-model", help="Hub id or folder of a public checkpoint (default: shipped)")
    parser.add_argument("--num-train", type=int, help="private training records per regime")
    parser.add_argument("--clip-frames", type=int, help="frames per clip (the pretrained model's own number)")
    parser.add_argument("--seeds", type=int, help="number of seeds (0, 1, ...)")
    parser.add_argument("--num-proc", type=int, help="anonymization processes")
    parser.add_argument("--target-epsilon", type=float, help="budget of the saved MaskDP model")
    parser.add_argument(
        "--public-fill", choices=("mean", "scene"), help="what the public view paints where pixels are sensitive"
    )
    parser.add_argument("--private-grad-weight", type=float, help="lambda_priv of maskdp (choose it on validation)")
    parser.add_argument(
        "--maskdp-branch-adam",
        action=argparse.BooleanOptionalAction,
        help="maskdp: Adam moments per branch (noisy private, public), stepped by plain SGD",
    )
    parser.set_defaults(handler=run)


def run(args) -> int:
    from ..quickstart import QuickstartConfig, run_quickstart

    overrides = {"output_dir": args.output_dir}
    for name in (
        "init",
        "pretrained_model",
        "num_train",
        "clip_frames",
        "num_proc",
        "target_epsilon",
        "public_fill",
        "private_grad_weight",
        "maskdp_branch_adam",
    ):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.regime:
        overrides["regimes"] = tuple(dict.fromkeys(args.regime))
    preset = "fast" if args.fast else args.preset
    if args.seeds is not None:
        overrides["seeds"] = tuple(range(args.seeds))
        overrides["sweep_seeds"] = min(args.seeds, QuickstartConfig.preset(preset).sweep_seeds)
    config = QuickstartConfig.preset(preset, **overrides)
    result = run_quickstart(config)
    print("wrote " + ", ".join(str(path) for path in result.files.values()))
    return 0
