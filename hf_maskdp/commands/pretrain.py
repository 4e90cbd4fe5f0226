"""`hf-maskdp pretrain OUTPUT_DIR`: pretrain a small VideoMAE on public avatar clips.

Renders a public corpus (avatars of people disjoint from the private data, a different action
vocabulary, scenes no private clip uses), trains a VideoMAE classifier on it (supervised, after
optional self-supervised tube masking: --masked-epochs), reports its own
test accuracy and writes a `save_pretrained` folder with a card. The quickstart fine-tunes the copy
of this checkpoint that ships in the package; this command rebuilds it (defaults = the shipped one).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from ..pretrain import PretrainConfig

    defaults = PretrainConfig()
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain a small VideoMAE on public avatar clips",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("output_dir", help="where the checkpoint (save_pretrained folder + card) goes")
    parser.add_argument("--num-train", type=int, default=defaults.num_train, help="public training clips")
    parser.add_argument("--num-test", type=int, default=defaults.num_test, help="public held-out clips")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="supervised epochs")
    parser.add_argument(
        "--masked-epochs",
        type=int,
        default=defaults.masked_epochs,
        help="self-supervised VideoMAE tube-masking epochs before the supervised ones",
    )
    parser.add_argument("--mask-ratio", type=float, default=defaults.mask_ratio)
    parser.add_argument(
        "--clip-frames", type=int, default=defaults.clip_frames, help="frames per clip (fine-tune with the same)"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from ..pretrain import PretrainConfig, pretrain

    config = PretrainConfig(
        output_dir=args.output_dir,
        num_train=args.num_train,
        num_test=args.num_test,
        epochs=args.epochs,
        masked_epochs=args.masked_epochs,
        mask_ratio=args.mask_ratio,
        clip_frames=args.clip_frames,
        seed=args.seed,
    )
    metrics = pretrain(config)
    print(
        f"wrote {args.output_dir}: test accuracy {metrics['test_accuracy_full_clips']:.3f} (full clips), "
        f"{metrics['test_accuracy_fill_view']:.3f} (fill view), chance {metrics['chance']:.3f}"
    )
    return 0
