"""`hf-maskdp train DATASET OUTPUT_DIR`: fine-tune VideoMAE with MaskDP on an anonymized dataset.

DATASET is a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or a Hub
dataset id. The model goes to OUTPUT_DIR with `maskdp_privacy.json`; `--push-to-hub REPO`
uploads it to a private repo unless `--public` is given.
"""

from __future__ import annotations

import argparse

from hf_maskdp.constants import PRIVACY_MODES, PRIVATE_MODES, PUBLIC_VIEWS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a video classifier with MaskDP",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", help="save_to_disk folder or Hub dataset id (anonymized: video, sensitive_mask, label)"
    )
    parser.add_argument("output_dir")
    parser.add_argument("--split", default="train")
    parser.add_argument("--eval-split", default=None, help="held-out split to evaluate on (never the private one)")
    parser.add_argument("--privacy-mode", default="maskdp", choices=PRIVACY_MODES)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--target-epsilon", type=float, default=None)
    budget.add_argument("--noise-multiplier", type=float, default=None)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--clip-norm", type=float, default=1.0, help="per-sample clip norm C")
    parser.add_argument("--private-batch-size", type=int, default=32, help="expected Poisson batch size")
    parser.add_argument("--public-batch-size", type=int, default=8)
    parser.add_argument("--micro-batch-size", type=int, default=8, help="examples per forward (memory)")
    parser.add_argument("--public-view", default=None, choices=PUBLIC_VIEWS)
    parser.add_argument("--stop-at-epsilon", type=float, default=None)
    parser.add_argument(
        "--trust-masks",
        action="store_true",
        help="DANGER: train on masks without the anonymizer's provenance, on your word that they are "
        "right; MaskDP protects only what they mark sensitive, and the model card says so",
    )
    parser.add_argument(
        "--epochs",
        type=float,
        default=5.0,
        help="steps = ceil(epochs / q), as in `hf-maskdp privacy calibrate --epochs`",
    )
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--model",
        default=None,
        help="VideoMAE checkpoint (path or Hub id); default: a small "
        "VideoMAE built from --image-size/--num-frames/--layers/--hidden-size",
    )
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden-size", type=int, default=192)
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is available")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="DataLoader worker processes that decode the next steps' clips (default 0: in the loop)",
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (per-example norms stay fp32)")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None)
    parser.add_argument("--public", action="store_true", help="make the pushed repo public (default: private)")


def load_split(source: str, split: str):
    """A split of a `save_to_disk` folder or of a Hub dataset."""
    import os

    import datasets

    if os.path.isdir(source):
        loaded = datasets.load_from_disk(source)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"{source} has splits {list(loaded)}, not {split!r}; pass --split")
            return loaded[split]
        return loaded
    return datasets.load_dataset(source, split=split)


def published_rows(dataset, split: str):
    """The split without the clips the anonymizer withheld (no video: they may still show a real
    person), with the count printed. The privacy record then counts the rows trained on."""
    from ..training.trainer import withheld_rows

    withheld = len(withheld_rows(dataset))
    if not withheld:
        return dataset
    print(
        f"{split}: skipping {withheld} of {len(dataset)} clips withheld by the anonymizer (no video); "
        f"using the other {len(dataset) - withheld}"
    )
    return dataset.filter(lambda video: video is not None, input_columns="video")


def build_model(args, dataset):
    from transformers import VideoMAEForVideoClassification

    feature = dataset.features.get("label")
    if feature is None:
        raise ValueError(f"the dataset has no 'label' column (columns: {dataset.column_names})")
    names = getattr(feature, "names", None)
    num_labels = len(names) if names else int(max(dataset["label"])) + 1
    labels = {"num_labels": num_labels}
    if names:
        labels.update(id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    if args.model:
        return VideoMAEForVideoClassification.from_pretrained(args.model, ignore_mismatched_sizes=True, **labels)
    from ..training.model import videomae_classifier

    return videomae_classifier(
        names or num_labels,
        image_size=args.image_size,
        num_frames=args.num_frames,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
    )


def run(args) -> int:
    import os

    import torch

    from ..training.collator import VideoClipCollator
    from ..training.config import DEFAULT_PUBLIC_VIEW, MaskDPConfig
    from ..training.trainer import MaskDPTrainer

    if args.privacy_mode in PRIVATE_MODES and args.target_epsilon is None and args.noise_multiplier is None:
        raise ValueError(f"--privacy-mode {args.privacy_mode} needs --target-epsilon or --noise-multiplier")
    train = published_rows(load_split(args.dataset, args.split), args.split)
    evaluation = published_rows(load_split(args.dataset, args.eval_split), args.eval_split) if args.eval_split else None
    model = build_model(args, train)
    private = args.privacy_mode in PRIVATE_MODES
    config = MaskDPConfig(
        output_dir=args.output_dir,
        privacy_mode=args.privacy_mode,
        target_epsilon=args.target_epsilon if private else None,
        noise_multiplier=args.noise_multiplier if private else None,
        target_delta=args.delta,
        per_sample_clip_norm=args.clip_norm,
        private_batch_size=args.private_batch_size,
        public_batch_size=args.public_batch_size,
        per_device_train_batch_size=args.micro_batch_size,
        per_device_eval_batch_size=args.micro_batch_size,
        public_view=args.public_view or DEFAULT_PUBLIC_VIEW,
        stop_at_epsilon=args.stop_at_epsilon,
        trust_masks=args.trust_masks,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        save_strategy="no",
        eval_strategy="epoch" if evaluation else "no",
        logging_steps=1,
        report_to="none",
        use_cpu=args.cpu or not torch.cuda.is_available(),
        dataloader_num_workers=args.workers,
        bf16=args.bf16,
    )
    collator = VideoClipCollator(num_frames=model.config.num_frames, image_size=model.config.image_size)
    trainer = MaskDPTrainer(
        model=model, args=config, train_dataset=train, eval_dataset=evaluation, data_collator=collator
    )
    trainer.train()
    trainer.save_model()
    if trainer.is_world_process_zero():
        trainer.create_model_card(dataset=args.dataset if not os.path.isdir(args.dataset) else None)
        if args.push_to_hub:
            from ..hub import push_private_model

            url = push_private_model(args.output_dir, args.push_to_hub, private=not args.public)
            print(f"pushed to {url} ({'public' if args.public else 'private'})")
        eps, delta = trainer.privacy_spent()
        record = trainer.privacy_record()
        print(
            f"trained {trainer.state.global_step} steps ({args.privacy_mode}) on {trainer.args.device}: "
            f"epsilon={eps:.4g}, delta={delta:g}; saved to {args.output_dir}"
        )
        if record["fully_public_records"] is not None:
            masks = "TRUSTED (--trust-masks), not verified" if args.trust_masks else "verified"
            print(
                f"{record['fully_public_records']} of {record['training_rows']} training clips have no sensitive "
                f"pixel (public only); masks {masks}"
            )
    _close_process_group()
    return 0


def _close_process_group() -> None:
    """Under torchrun/accelerate, tear gloo/NCCL down before exit (a rank can abort otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
