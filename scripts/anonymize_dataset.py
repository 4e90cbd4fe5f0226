#!/usr/bin/env python
"""Anonymize a real action-recognition dataset: every person becomes an avatar, with MaskDP masks.

    python scripts/anonymize_dataset.py --input /data/UCF101 --output_dir ucf101-anonymized \
        --layout ucf101 --official_split 1 --num_proc 16 [--push_to_hub you/ucf101-anonymized]

Input: a folder in one of the layouts of `hf_maskdp.data.layouts` (UCF-101, HMDB-51, NTU RGB+D 60,
Toyota Smarthome; `--layout auto` guesses) or a `save_to_disk` folder with a `video` column.
Output (`--output_dir`, a `save_to_disk` folder): the anonymizer's columns (`video`, `avatar_layer`,
`sensitive_mask`, `storage_format`, `avatar_mask`, `anonymization`, `num_people`; videos stored lossy at
`--crf`/`--preset`, see `hf_maskdp.storage`), the labels and other metadata, a `README.md` dataset
card and `anonymization_summary.json`. Every `AnonymizerConfig` field is an option too
(`--max_frames`, `--seed`, `--errors`, `--downscale`, ...).

Identity metadata (`video_id`, `subject`, `group`) is dropped unless `--keep_identity_columns`:
MaskDP protects pixels, not metadata, and these columns would link clips to real people.
`--num_proc N` runs N worker processes (each builds its own pose model and renderer);
`--push_to_hub` pushes a private dataset unless `--public` is given.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from hf_maskdp.anonymize.pipeline import AnonymizerConfig
from hf_maskdp.constants import STATUS_OK


@dataclass
class ScriptArguments:
    input: str = field(metadata={"help": "Dataset folder (a known layout) or a save_to_disk folder."})
    output_dir: str = field(metadata={"help": "Where to save the anonymized dataset (must be new or empty)."})
    layout: str = field(default="auto", metadata={"help": "auto, ucf101, hmdb51, ntu60 or smarthome."})
    official_split: int = field(default=1, metadata={"help": "UCF-101 / HMDB-51 official split (1, 2 or 3)."})
    protocol: str = field(
        default="cross_subject",
        metadata={
            "help": "NTU RGB+D: cross_subject or cross_view; Toyota Smarthome: cross_subject, cross_view_1 or cross_view_2."
        },
    )
    splits: str | None = field(default=None, metadata={"help": "Comma-separated splits to anonymize (default: all)."})
    max_clips: int | None = field(default=None, metadata={"help": "Anonymize only the first N clips of each split."})
    num_proc: int | None = field(default=None, metadata={"help": "Worker processes for datasets.map."})
    batch_size: int = field(default=2, metadata={"help": "Clips per map batch."})
    keep_identity_columns: bool = field(
        default=False,
        metadata={"help": "Keep video_id/subject/group (they identify real people; MaskDP does not protect them)."},
    )
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub dataset repo id (user/name) to push to."})
    public: bool = field(
        default=False, metadata={"help": "Push as a public repo (default private: backgrounds are real)."}
    )
    token: str | None = field(default=None, metadata={"help": "Hub token (default: HF_TOKEN or the stored login)."})


def load_input(args: ScriptArguments):
    """A `DatasetDict` from a layout folder or a saved dataset, reduced to the requested splits and clips."""
    from datasets import Dataset, DatasetDict, Video, load_from_disk

    from hf_maskdp.data.layouts import IDENTITY_COLUMNS, detect_layout, load_layout

    path = Path(args.input)
    if not path.is_dir():
        raise FileNotFoundError(f"input folder not found: {path}")
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        data = load_from_disk(str(path))
        data = DatasetDict(train=data) if isinstance(data, Dataset) else data
    else:
        layout = detect_layout(path) if args.layout == "auto" else args.layout
        options = {"split": args.official_split} if layout in ("ucf101", "hmdb51") else {"protocol": args.protocol}
        data = load_layout(layout, path, **options)
    if args.splits:
        wanted = [name.strip() for name in args.splits.split(",")]
        unknown = sorted(set(wanted) - set(data))
        if unknown:
            raise ValueError(f"--splits: no split {unknown} in the input (it has {sorted(data)})")
        data = DatasetDict({name: data[name] for name in wanted})
    for name in data:
        split = data[name]
        if args.max_clips is not None:
            split = split.select(range(min(args.max_clips, len(split))))
        identity = [c for c in IDENTITY_COLUMNS if c in split.column_names]
        if identity and not args.keep_identity_columns:
            split = split.remove_columns(identity)
        video = split.features.get("video")
        if isinstance(video, Video) and video.decode:
            split = split.cast_column("video", Video(decode=False))  # the anonymizer decodes with PyAV itself
        data[name] = split
    return data


def anonymize(data, config: AnonymizerConfig, args: ScriptArguments):
    from hf_maskdp.anonymize.pipeline import AvatarAnonymizer

    anonymizer = AvatarAnonymizer(config)
    for name in data:
        split = data[name]
        data[name] = split.map(
            anonymizer,
            batched=True,
            batch_size=args.batch_size,
            num_proc=args.num_proc,
            with_rank=True,
            features=anonymizer.features(split.features),
            desc=f"Anonymizing {name}",
        )
    return data


def summarize(data, seconds: float) -> dict:
    splits = {}
    for name, split in data.items():
        statuses = Counter(status.split(":")[0] for status in split["anonymization"])
        splits[name] = {
            "clips": len(split),
            "status_counts": dict(sorted(statuses.items())),
            "anonymized_fraction": statuses[STATUS_OK] / max(1, len(split)),
        }
    return {"splits": splits, "seconds": round(seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser((ScriptArguments, AnonymizerConfig), description=__doc__.split("\n")[0])
    try:
        args, config = parser.parse_args_into_dataclasses(argv)
        run(args, config)
    except (ValueError, FileNotFoundError, PermissionError) as err:  # bad input: one clear line
        print(f"anonymize_dataset.py: error: {err}", file=sys.stderr)
        return 2
    return 0


def run(args: ScriptArguments, config: AnonymizerConfig) -> None:
    from hf_maskdp.hub import dataset_card, push_anonymized_dataset, summarize_dataset

    output_dir = Path(args.output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ValueError(f"--output_dir {output_dir} is not empty; choose a new folder")
    start = time.perf_counter()
    data = anonymize(load_input(args), config, args)
    summary = summarize(data, time.perf_counter() - start)

    info = {**config.to_dict(), "pose_estimator": config.pose_source, "refiner": "none", "source": args.input}
    data.save_to_disk(str(output_dir))
    (output_dir / "anonymization_summary.json").write_text(json.dumps(summary, indent=2))
    repo_id = args.push_to_hub or f"local/{output_dir.name}"
    dataset_card(repo_id, info, summarize_dataset(data)).save(str(output_dir / "README.md"))
    for name, counts in summary["splits"].items():
        print(
            f"{name}: {counts['clips']} clips, {counts['anonymized_fraction']:.0%} fully anonymized "
            f"{counts['status_counts']}"
        )
    print(f"saved to {output_dir} in {summary['seconds']:.1f} s")
    if args.push_to_hub:
        url = push_anonymized_dataset(
            data, args.push_to_hub, private=not args.public, token=args.token, anonymizer_info=info
        )
        print(f"pushed to {url} ({'public' if args.public else 'private'})")


if __name__ == "__main__":
    sys.exit(main())
