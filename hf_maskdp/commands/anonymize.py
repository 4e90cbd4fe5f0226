"""`hf-maskdp anonymize INPUT OUTPUT_DIR`: replace people by avatars in every clip of a dataset."""

from __future__ import annotations

import argparse
import json
import os

from hf_maskdp.constants import STATUS_OK
from hf_maskdp.storage import DEFAULT_CRF, DEFAULT_LAYER_CRF, DEFAULT_MASK_BLOCK, DEFAULT_PRESET


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "anonymize",
        help="replace every person by a synthetic avatar and write the sensitivity masks",
        description=(
            "Anonymize a video dataset: INPUT is a folder of videos (every video file is one row; sub-folders "
            "become labels; other files are counted and skipped), a dataset saved with save_to_disk, or a Hub "
            "dataset id. Writes the result with save_to_disk to OUTPUT_DIR (refused if it exists, unless --overwrite). "
            "Each row keeps its input columns and a 'source' column naming where it came from."
        ),
    )
    parser.add_argument("input", metavar="INPUT")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR")
    parser.add_argument("--split", help="only this split of INPUT (default: all)")
    parser.add_argument(
        "--id-column",
        metavar="COLUMN",
        help="dataset INPUT: the column that names each row; copied to the output's 'source' column "
        "(default: '<split>/<row index>'; for a folder, 'source' is each file's relative path)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUTPUT_DIR (its old content is removed first); without it, refuse",
    )
    parser.add_argument("--video-column", default="video")
    parser.add_argument("--body-model", default="mannequin", help="mannequin (default), smplh or anny")
    parser.add_argument(
        "--smplh-model-path",
        metavar="PATH",
        help="--body-model smplh: your SMPL-H .npz file or folder (default: $SMPLH_MODEL_PATH)",
    )
    parser.add_argument(
        "--refiner",
        metavar="ID",
        help="redraw avatars with this diffusers img2img model (Hub id or path, e.g. Stable Diffusion 1.5)",
    )
    parser.add_argument(
        "--refiner-context",
        choices=["render", "real"],
        default=None,
        help="what the refiner sees: the avatar render only (default, avatar pixels stay public) or "
        "the real frame (avatar pixels become sensitive)",
    )
    parser.add_argument(
        "--refiner-options",
        metavar="JSON",
        default="{}",
        help='other RefinerConfig fields, e.g. \'{"strength": 0.3, "num_inference_steps": 20}\'',
    )
    parser.add_argument("--pose-source", default="mediapipe", choices=["mediapipe", "given"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-people", type=int, default=4, help="people searched for per frame (default 4)")
    parser.add_argument(
        "--errors",
        default="withhold",
        choices=["withhold", "keep", "raise"],
        help="clips that may still show a real person: withhold the video (default), keep it "
        "with an all-sensitive mask, or stop",
    )
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--max-resolution", type=int, default=1920)
    parser.add_argument("--downscale", action="store_true", help="shrink clips above --max-resolution")
    parser.add_argument(
        "--crf", type=int, default=DEFAULT_CRF, help=f"H.264 quality of the stored clip (default {DEFAULT_CRF})"
    )
    parser.add_argument(
        "--layer-crf",
        type=int,
        default=DEFAULT_LAYER_CRF,
        help=f"H.264 quality of the stored avatar layer (default {DEFAULT_LAYER_CRF})",
    )
    parser.add_argument(
        "--mask-block",
        type=int,
        default=DEFAULT_MASK_BLOCK,
        help=f"store sensitive_mask rounded out to blocks of this many pixels, 1 = exact (default {DEFAULT_MASK_BLOCK})",
    )
    parser.add_argument(
        "--preset", default=DEFAULT_PRESET, help=f"x264 preset of the stored videos (default {DEFAULT_PRESET})"
    )
    parser.add_argument("--num-proc", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--push-to-hub", metavar="REPO", help="also push the result to this Hub dataset repo (private)")
    parser.add_argument(
        "--public",
        action="store_true",
        help="make the pushed repo public (warns: backgrounds and inpainted pixels are real footage)",
    )
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    sharded = parser.add_argument_group(
        "sharded, resumable runs (hf_maskdp/anonymize/sharded.py)",
        "--tasks N cuts INPUT into N tasks, each writing OUTPUT_DIR/data/{split}-{task}-of-{N}.parquet; running the "
        "same command again skips completed tasks and redoes the rest",
    )
    sharded.add_argument("--tasks", type=int, default=None, help="number of tasks (shards); default: one datasets.map")
    sharded.add_argument("--workers", type=int, default=1, help="tasks running at once (processes, or Slurm/Ray tasks)")
    sharded.add_argument(
        "--executor",
        choices=["local", "slurm", "ray"],
        default="local",
        help="local process pool (default), a Slurm job array, or a Ray cluster (RAY_ADDRESS or local)",
    )
    sharded.add_argument("--slurm-partition", default=None)
    sharded.add_argument("--slurm-time", default=None, help="time limit per array task (default 24:00:00)")
    sharded.add_argument("--slurm-cpus-per-task", type=int, default=None, help="default 1")
    sharded.add_argument("--slurm-mem-per-cpu-gb", type=int, default=None, help="default 4")
    parser.set_defaults(handler=run)


def load_input(
    source: str, split: str | None = None, video_column: str = "video", id_column: str | None = None, report=print
):
    """A `DatasetDict` from a video folder, a `save_to_disk` folder or a Hub id, with a `source` column.

    A video folder becomes exactly one row per video file (`hf_maskdp.data.folder`; split names are
    never guessed from file names), `source` holding each file's relative path; `report` gets one
    line saying how many videos were read and which other files were skipped. For a dataset, `source`
    is the `id_column` value of each row (a column the user names), or `"<split>/<row index>"`.
    """
    import datasets

    from hf_maskdp.data.folder import load_video_folder

    if os.path.isdir(source):
        if any(os.path.exists(os.path.join(source, f)) for f in ("dataset_dict.json", "state.json")):
            data = datasets.load_from_disk(source)
        else:
            if id_column is not None:
                raise ValueError(
                    "--id-column names a column of a dataset; a video folder's rows are named by "
                    "their file path (column 'source')"
                )
            folder = load_video_folder(source)
            report(folder.describe(source))
            data = folder.dataset
    elif os.path.exists(source):
        raise ValueError(f"INPUT {source!r} is a file; put the videos in a folder (sub-folders become labels)")
    elif os.path.isabs(source) or source.startswith(".") or os.path.splitext(source)[1]:
        raise FileNotFoundError(
            f"INPUT {source!r} does not exist (expected a folder of videos, a saved dataset or a Hub id)"
        )
    else:
        data = datasets.load_dataset(source)
    if isinstance(data, datasets.Dataset):
        data = datasets.DatasetDict({"train": data})
    if split is not None:
        if split not in data:
            raise ValueError(f"split {split!r} not in INPUT (splits: {list(data)})")
        data = datasets.DatasetDict({split: data[split]})
    for name, part in data.items():
        if video_column not in part.column_names:
            raise ValueError(
                f"split {name!r} has no {video_column!r} column (columns: {part.column_names}); use --video-column"
            )
        if isinstance(part.features[video_column], datasets.Video):  # decoding needs torchcodec: read raw values
            part = part.cast_column(video_column, datasets.Video(decode=False))
        data[name] = _with_source(part, name, id_column)
    return data


def _with_source(part, split: str, id_column: str | None):
    """`part` with a `source` column naming where each row came from (kept if the input has one)."""
    if id_column is not None:
        if id_column not in part.column_names:
            raise ValueError(
                f"--id-column {id_column!r} is not a column of split {split!r} (columns: {part.column_names})"
            )
        ids = part[id_column]
        if any(value is None for value in ids):
            raise ValueError(f"--id-column {id_column!r}: row {ids.index(None)} of split {split!r} has no id")
        if "source" in part.column_names and id_column != "source":
            part = part.remove_columns("source")
        return part if id_column == "source" else part.add_column("source", [str(value) for value in ids])
    if "source" in part.column_names:
        return part
    return part.add_column("source", [f"{split}/{index}" for index in range(len(part))])


def prepare_output_dir(output_dir: str, overwrite: bool, input_path: str | None = None, remove: bool = True) -> None:
    """Refuse an existing, non-empty OUTPUT_DIR unless `overwrite`; with it, remove the old content
    first (so no stale split folder survives); `remove=False` only checks. Never removes a folder
    that holds the input."""
    import shutil

    if not os.path.exists(output_dir) or (os.path.isdir(output_dir) and not os.listdir(output_dir)):
        return
    if not overwrite:
        raise FileExistsError(
            f"OUTPUT_DIR {output_dir!r} exists and is not empty; pass --overwrite to replace it "
            "(its content is removed first) or choose another folder"
        )
    if not os.path.isdir(output_dir):
        raise FileExistsError(f"OUTPUT_DIR {output_dir!r} is a file; choose a folder")
    output = os.path.realpath(output_dir)
    if input_path is not None and os.path.exists(input_path):
        inside = os.path.realpath(input_path)
        if inside == output or inside.startswith(output + os.sep):
            raise ValueError(f"--overwrite would delete INPUT {input_path!r}, which lies in OUTPUT_DIR {output_dir!r}")
    if remove:
        shutil.rmtree(output_dir)


def run(args: argparse.Namespace) -> int:
    from hf_maskdp.anonymize.pipeline import AnonymizerConfig, AvatarAnonymizer
    from hf_maskdp.hub import push_anonymized_dataset, summarize_dataset

    try:
        refiner_options = dict(json.loads(args.refiner_options))
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"--refiner-options {args.refiner_options!r} is not a JSON object ({error})") from error
    if args.refiner_context:
        refiner_options["context"] = args.refiner_context
    if refiner_options and not args.refiner:
        raise ValueError(
            "--refiner-context and --refiner-options need --refiner ID (a diffusers img2img model id or path)"
        )
    config = AnonymizerConfig(
        body_model=args.body_model,
        pose_source=args.pose_source,
        video_column=args.video_column,
        seed=args.seed,
        max_people=args.max_people,
        errors=args.errors,
        max_frames=args.max_frames,
        max_resolution=args.max_resolution,
        downscale=args.downscale,
        smplh_model_path=args.smplh_model_path,
        refiner=args.refiner,
        refiner_options=refiner_options,
        crf=args.crf,
        layer_crf=args.layer_crf,
        preset=args.preset,
        mask_block=args.mask_block,
    )
    if args.tasks is not None:
        from hf_maskdp.anonymize.sharded import run_from_args

        return run_from_args(args, config)
    anonymizer = AvatarAnonymizer(config)
    prepare_output_dir(args.output_dir, args.overwrite, args.input, remove=False)  # refuse before any work
    data = load_input(args.input, args.split, args.video_column, args.id_column)
    prepare_output_dir(args.output_dir, args.overwrite, args.input)  # the input loaded: now replace the old output
    result = data.map(
        anonymizer,
        batched=True,
        batch_size=args.batch_size,
        num_proc=args.num_proc,
        features=anonymizer.features(next(iter(data.values())).features),
        desc="Anonymizing",
    )
    result.save_to_disk(args.output_dir)
    print(format_summary(summarize_dataset(result), args.output_dir))
    if args.push_to_hub:
        url = push_anonymized_dataset(
            result, args.push_to_hub, private=not args.public, token=args.token, anonymizer_info=config
        )
        print(f"pushed to {url} ({'public' if args.public else 'private'})")
    return 0


def format_summary(summary: dict, output_dir: str) -> str:
    statuses = summary.get("status_counts", {})
    failures = summary["clips"] - statuses.get(STATUS_OK, 0)
    by_status = ", ".join(f"{name}: {count}" for name, count in statuses.items())
    return (
        f"anonymized {summary['clips']} clips ({summary['frames']} frames kept), {summary['people']} people found, "
        f"{failures} failures ({by_status}) -> {output_dir}"
    )
