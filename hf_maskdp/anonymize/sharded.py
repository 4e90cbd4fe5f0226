"""Anonymize a whole dataset as sharded, resumable tasks on a `datatrove` executor.

The rows of INPUT (all splits, in order) are cut into `tasks` contiguous ranges. Task `rank` runs
the same `AvatarAnonymizer` map function as `hf-maskdp anonymize` on its range and writes

    OUTPUT/data/{split}-{rank:05d}-of-{tasks:05d}.parquet    its rows of each split it touches

first under OUTPUT/.hf_maskdp/tmp/, renamed into data/ when the whole task is done. datatrove
marks the task completed only after that (`.hf_maskdp/datatrove/completions/{rank:05d}`), and a
re-run of the same command skips completed tasks and redoes the others from scratch: a task killed
midway leaves no file in data/ that a completed task would not write again with the same name, so
no row is ever duplicated or lost. `.hf_maskdp/plan.json` records what the run is (input rows, each
row's key, tasks, anonymizer config): a re-run that differs is refused rather than mixed in.

Row key (`source` column): the input's `source` column when it has one; else the video's path
relative to INPUT when INPUT is a folder; else `"{split}/{row index}"` (stable for a given
revision of a saved or Hub dataset). Added to the output when the input has no such column.

Engines (`executor`): "local" (a process pool on this machine, `workers` at once), "slurm" (an
sbatch job array; the submitting machine needs no CPU) and "ray" (a running Ray cluster, or a local
one). Each worker process builds its `AvatarAnonymizer` (mediapipe graphs, EGL context) once and
reuses it for every task it runs (`_anonymizer`); pool workers start from datatrove's forkserver,
never forked from a process that already used mediapipe or EGL (see pipeline._check_not_forked).

The files in data/ use the Hub's `{split}-NNNNN-of-NNNNN` names, so `datasets.load_dataset(OUTPUT)`
and a pushed repo (`push_shards`, uploaded as they are) both show the splits;
`hf_maskdp.load_anonymized_dataset(OUTPUT)` also refuses an unfinished run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datatrove.pipeline.base import PipelineStep

STATE_DIR = ".hf_maskdp"  # hidden: datasets and the Hub ignore it
PLAN_FILE = f"{STATE_DIR}/plan.json"
SOURCE_COLUMN = "source"
EXECUTORS = ("local", "slurm", "ray")
SLURM_DEFAULTS = {"partition": None, "time": "24:00:00", "cpus_per_task": 1, "mem_per_cpu_gb": 4}  # per task


@dataclass
class ShardPlan:
    """What a sharded run is; a re-run must have the same plan to resume."""

    input: str
    split: str | None
    video_column: str
    tasks: int
    splits: dict  # split name -> number of rows, in input order
    keys_sha256: str  # of every row's key, in order: the same rows in the same order
    anonymizer: dict  # AnonymizerConfig.to_dict()

    @property
    def total_rows(self) -> int:
        return sum(self.splits.values())

    def ranges(self, rank: int) -> list[tuple[str, int, int]]:
        """Task `rank`'s rows: `(split, start, stop)` per split it touches (contiguous global ranges)."""
        total = self.total_rows
        first, last = rank * total // self.tasks, (rank + 1) * total // self.tasks
        out, offset = [], 0
        for split, rows in self.splits.items():
            start, stop = max(first, offset), min(last, offset + rows)
            if start < stop:
                out.append((split, start - offset, stop - offset))
            offset += rows
        return out

    def shard_name(self, split: str, rank: int) -> str:
        return f"{split}-{rank:05d}-of-{self.tasks:05d}.parquet"

    def differences(self, other: ShardPlan) -> list[str]:
        return [name for name in asdict(self) if getattr(self, name) != getattr(other, name)]


def row_keys(split: str, dataset, video_column: str, input_root: str | None) -> list[str]:
    """Each row's stable key (see the module docstring)."""
    if SOURCE_COLUMN in dataset.column_names:
        return [str(key) for key in dataset[SOURCE_COLUMN]]
    if input_root is not None:
        root = os.path.abspath(input_root)
        paths = [(video or {}).get("path") if isinstance(video, dict) else None for video in dataset[video_column]]
        if all(path and os.path.abspath(path).startswith(root + os.sep) for path in paths):
            return [os.path.relpath(os.path.abspath(path), root) for path in paths]
    return [f"{split}/{index}" for index in range(len(dataset))]


# --------------------------------------------------------------------------- per process state

_INPUTS: dict = {}  # (input, split, video_column) -> (DatasetDict, keys per split)
_ANONYMIZERS: dict = {}  # config json -> AvatarAnonymizer, built once per worker process
_BUILDS = {"anonymizers": 0}


def _load(input: str, split: str | None, video_column: str):
    """The input dataset and its row keys, loaded once per process (the loader of `hf-maskdp anonymize`)."""
    key = (input, split, video_column)
    if key not in _INPUTS:
        from hf_maskdp.commands.anonymize import load_input

        data = load_input(input, split, video_column)
        root = input if os.path.isdir(input) else None
        _INPUTS[key] = data, {name: row_keys(name, part, video_column, root) for name, part in data.items()}
    return _INPUTS[key]


def _anonymizer(config: dict):
    from hf_maskdp.anonymize.pipeline import AnonymizerConfig, AvatarAnonymizer

    key = json.dumps(config, sort_keys=True)
    if key not in _ANONYMIZERS:
        _ANONYMIZERS[key] = AvatarAnonymizer(AnonymizerConfig(**config))
        _BUILDS["anonymizers"] += 1
    return _ANONYMIZERS[key]


def _write_json(path: Path, value) -> None:
    """Write `value` atomically (a reader sees the old or the new file, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


# --------------------------------------------------------------------------- the datatrove step


class AnonymizeShard(PipelineStep):
    """The datatrove pipeline step: anonymize task `rank`'s rows and write its shards atomically."""

    name = "🎭 anonymize"
    type = "hf_maskdp"

    def __init__(self, plan: ShardPlan, output_dir: str, batch_size: int = 2):
        super().__init__()
        self.plan, self.output_dir, self.batch_size = plan, str(output_dir), batch_size

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from datasets.arrow_writer import ParquetWriter

        plan, output = self.plan, Path(self.output_dir)
        dataset, keys = _load(plan.input, plan.split, plan.video_column)
        found = {name: len(part) for name, part in dataset.items()}
        if found != plan.splits or keys_digest(keys) != plan.keys_sha256:  # e.g. files added on a node's view
            raise ValueError(
                f"INPUT {plan.input} changed since the run was planned (rows {found}, planned {plan.splits}); "
                "restore it, or start a new OUTPUT"
            )
        anonymizer = _anonymizer(plan.anonymizer)
        progress = TaskProgress(output, rank, sum(stop - start for _, start, stop in plan.ranges(rank)))
        temporary = output / STATE_DIR / "tmp"
        temporary.mkdir(parents=True, exist_ok=True)
        written = []
        for split, start, stop in plan.ranges(rank):
            part = dataset[split]
            features = anonymizer.features(part.features)
            if SOURCE_COLUMN not in features:
                from datasets import Value

                features[SOURCE_COLUMN] = Value("string")
            path = temporary / plan.shard_name(split, rank)
            with ParquetWriter(path=str(path), features=features) as writer:
                for begin in range(start, stop, self.batch_size):
                    end = min(begin + self.batch_size, stop)
                    batch = part[begin:end]
                    batch.setdefault(SOURCE_COLUMN, keys[split][begin:end])
                    with self.track_time("batch"):
                        batch.update(anonymizer(batch))  # as datasets.map: outputs replace/add columns
                    writer.write_batch(batch)
                    frames = [shape[0] if shape else 0 for shape in (m["shape"] for m in batch["sensitive_mask"])]
                    for status in batch["anonymization"]:
                        self.stat_update(str(status).split(":")[0])
                    progress.update(clips=end - begin, frames=sum(frames))
                writer.finalize()
            written.append(path)
        (output / "data").mkdir(parents=True, exist_ok=True)
        for path in written:  # only now does the task's output appear in data/ (on disk first: a node may die)
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(path, output / "data" / path.name)
        progress.finish()


class TaskProgress:
    """One task's progress file (`.hf_maskdp/progress/{rank:05d}.json`), read by `ProgressMonitor`."""

    def __init__(self, output: Path, rank: int, rows: int):
        self.path = output / STATE_DIR / "progress" / f"{rank:05d}.json"
        self.state = {
            "rank": rank,
            "rows": rows,
            "clips": 0,
            "frames": 0,
            "done": False,
            "pid": os.getpid(),
            "anonymizers_built_in_process": _BUILDS["anonymizers"],
            "started": time.time(),
            "cpu_seconds": 0.0,
        }
        self._cpu_start = time.process_time()  # this process, all its threads (mediapipe runs several)
        _write_json(self.path, self.state)

    def update(self, clips: int, frames: int) -> None:
        self.state["clips"] += clips
        self.state["frames"] += frames
        self.state["anonymizers_built_in_process"] = _BUILDS["anonymizers"]
        self.state["updated"] = time.time()
        self.state["cpu_seconds"] = time.process_time() - self._cpu_start
        _write_json(self.path, self.state)

    def finish(self) -> None:
        self.state["done"] = True
        _write_json(self.path, self.state)


def read_progress(output_dir) -> dict[int, dict]:
    folder = Path(output_dir) / STATE_DIR / "progress"
    progress = {}
    for path in sorted(folder.glob("[0-9]*.json")):
        try:
            progress[int(path.stem)] = json.loads(path.read_text())
        except (ValueError, OSError):  # replaced while reading: next time
            continue
    return progress


class ProgressMonitor(threading.Thread):
    """Prints clips done / total, frames per second and ETA across all tasks every `interval` s."""

    def __init__(self, output_dir, plan: ShardPlan, interval: float = 10.0, stream=None):
        super().__init__(daemon=True)
        self.output_dir, self.plan, self.interval, self.stream = output_dir, plan, interval, stream or sys.stderr
        self.started = time.time()
        self._stop_event = threading.Event()

    def snapshot(self, now: float | None = None) -> dict:
        done_before = clips = frames_now = 0
        for state in read_progress(self.output_dir).values():
            if state.get("started", 0) >= self.started:  # this run's work
                clips += state["clips"]
                frames_now += state["frames"]
            elif state.get("done"):  # completed by an earlier run
                done_before += state["clips"]
        elapsed = max((now or time.time()) - self.started, 1e-9)
        remaining = self.plan.total_rows - done_before - clips
        rate = clips / elapsed
        return {
            "clips": done_before + clips,
            "total": self.plan.total_rows,
            "fps": frames_now / elapsed,
            "eta": remaining / rate if rate > 0 else None,
        }

    def line(self, now: float | None = None) -> str:
        s = self.snapshot(now)
        eta = "?" if s["eta"] is None else time.strftime("%H:%M:%S", time.gmtime(s["eta"]))
        return f"anonymize: {s['clips']}/{s['total']} clips, {s['fps']:.1f} frames/s, ETA {eta}"

    def run(self):
        while not self._stop_event.wait(self.interval):
            print(self.line(), file=self.stream, flush=True)

    def stop(self):
        """Stop and print the last line (so every run reports its rate, however short)."""
        self._stop_event.set()
        self.join()
        print(self.line(), file=self.stream, flush=True)


# --------------------------------------------------------------------------- the run


@dataclass
class ShardedRunResult:
    output_dir: str
    tasks: int
    completed_before: list[int] = field(default_factory=list)  # tasks skipped as already complete
    ran: list[int] = field(default_factory=list)  # tasks run (or submitted) now
    clips_run: int = 0  # rows of the tasks run now
    seconds: float = 0.0
    complete: bool = False  # every task done (False after a Slurm submission)
    summary: dict | None = None  # hub.summarize_dataset of the shards, when complete


def plan_run(input: str, config, tasks: int, split: str | None = None) -> ShardPlan:
    if tasks < 1:
        raise ValueError(f"--tasks {tasks}: use at least 1 task")
    if os.path.exists(input):  # tasks may run elsewhere (another working directory, another node)
        input = os.path.abspath(input)
    dataset, keys = _load(input, split, config.video_column)
    all_keys = [key for name in dataset for key in keys[name]]
    duplicated = len(all_keys) - len(set(all_keys))
    if duplicated:
        raise ValueError(
            f"INPUT has {duplicated} rows whose {SOURCE_COLUMN!r} repeats another's: each row needs its own key"
        )
    return ShardPlan(
        input=input,
        split=split,
        video_column=config.video_column,
        tasks=tasks,
        splits={name: len(part) for name, part in dataset.items()},
        keys_sha256=keys_digest(keys),
        anonymizer=config.to_dict(),
    )


def keys_digest(keys: dict[str, list[str]]) -> str:
    """sha256 of every row's key, split by split, in order: the same rows in the same order."""
    return hashlib.sha256(
        "\n".join(f"{name}\t{key}" for name, part in keys.items() for key in part).encode()
    ).hexdigest()


def prepare_output(output_dir, plan: ShardPlan, overwrite: bool = False) -> None:
    """Start a new output folder, or check that an existing one is this run (then it resumes)."""
    import shutil

    output = Path(output_dir)
    plan_file = output / PLAN_FILE
    if overwrite and output.exists():
        shutil.rmtree(output)
    if plan_file.exists():
        previous = ShardPlan(**json.loads(plan_file.read_text()))
        different = previous.differences(plan)
        if different:
            raise ValueError(
                f"OUTPUT {output} holds a sharded run with another {', '.join(different)}; re-run it with the "
                f"same INPUT and options to resume, or choose a new OUTPUT (or --overwrite to start again)"
            )
        return
    if output.exists() and any(output.iterdir()):
        raise ValueError(f"OUTPUT {output} exists and is not a sharded run; choose a new OUTPUT (or --overwrite)")
    _write_json(plan_file, asdict(plan))


def completed_tasks(output_dir, plan: ShardPlan) -> list[int]:
    folder = Path(output_dir) / STATE_DIR / "datatrove" / "completions"
    return [rank for rank in range(plan.tasks) if (folder / f"{rank:05d}").exists()]


def make_executor(
    plan: ShardPlan,
    output_dir,
    *,
    executor: str = "local",
    workers: int = 1,
    batch_size: int = 2,
    slurm: dict | None = None,
    ray: dict | None = None,
):
    """The datatrove executor running one `AnonymizeShard` per task."""
    if executor not in EXECUTORS:
        raise ValueError(f"--executor {executor!r}: choose one of {EXECUTORS}")
    if workers < 1:
        raise ValueError(f"--workers {workers}: use at least 1")
    output_dir = os.path.abspath(output_dir)
    pipeline = [AnonymizeShard(plan, output_dir, batch_size)]
    logging_dir = os.path.join(output_dir, STATE_DIR, "datatrove")
    if executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        # forkserver: workers never inherit a parent's mediapipe graphs or EGL context
        return LocalPipelineExecutor(
            pipeline, tasks=plan.tasks, workers=workers, logging_dir=logging_dir, start_method="forkserver"
        )
    if executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        options = dict(slurm or {})
        if not options.get("partition"):
            raise ValueError("--executor slurm needs --slurm-partition NAME (the partition the job array runs on)")
        activate = Path(sys.prefix) / "bin" / "activate"
        options.setdefault("env_command", f"source {activate}" if activate.exists() else None)
        return SlurmPipelineExecutor(
            pipeline,
            tasks=plan.tasks,
            workers=workers,
            logging_dir=logging_dir,
            job_name="hf-maskdp-anonymize",
            **options,
        )
    from datatrove.executor import RayPipelineExecutor

    return RayPipelineExecutor(pipeline, tasks=plan.tasks, workers=workers, logging_dir=logging_dir, **(ray or {}))


def run_sharded(
    input: str,
    output_dir,
    config,
    *,
    tasks: int,
    workers: int = 1,
    executor: str = "local",
    split: str | None = None,
    batch_size: int = 2,
    overwrite: bool = False,
    progress_interval: float = 10.0,
    slurm: dict | None = None,
    ray: dict | None = None,
) -> ShardedRunResult:
    """Run (or resume) a sharded anonymization of `input` into `output_dir`; see the module docstring.

    `config` is an `AnonymizerConfig`. With `executor="slurm"` the job array is submitted and this
    returns at once (`complete=False`); run it again once the jobs are done for the summary.
    """
    plan = plan_run(input, config, tasks, split)
    prepare_output(output_dir, plan, overwrite)
    before = completed_tasks(output_dir, plan)
    to_run = [rank for rank in range(plan.tasks) if rank not in before]
    result = ShardedRunResult(
        str(output_dir),
        plan.tasks,
        before,
        to_run,
        sum(stop - start for rank in to_run for _, start, stop in plan.ranges(rank)),
    )
    engine = make_executor(
        plan, output_dir, executor=executor, workers=workers, batch_size=batch_size, slurm=slurm, ray=ray
    )
    started = time.time()
    if to_run:
        if executor == "ray":
            import ray as ray_module

            ray_module.init(ignore_reinit_error=True)  # joins RAY_ADDRESS's cluster, or starts a local one
        monitor = ProgressMonitor(output_dir, plan, progress_interval) if executor != "slurm" else None
        if monitor:
            monitor.start()
        try:
            engine.run()
        finally:
            if monitor:
                monitor.stop()
    result.seconds = time.time() - started
    result.complete = len(completed_tasks(output_dir, plan)) == plan.tasks
    if executor != "slurm" and not result.complete:
        missing = sorted(set(range(plan.tasks)) - set(completed_tasks(output_dir, plan)))
        raise RuntimeError(
            f"tasks {missing} failed (logs: {logging_dir(output_dir)}/logs); re-run the same command to retry them"
        )
    if result.complete:
        from hf_maskdp.hub import summarize_dataset

        result.summary = summarize_dataset(load_shards(output_dir))
    return result


def logging_dir(output_dir) -> str:
    return os.path.join(os.path.abspath(output_dir), STATE_DIR, "datatrove")


# --------------------------------------------------------------------------- reading and pushing


def is_sharded_output(path) -> bool:
    return (Path(path) / PLAN_FILE).is_file()


def load_shards(output_dir, split: str | None = None):
    """The shards of a finished run as one `DatasetDict` (or the `split`); refuses an unfinished run."""
    import datasets

    output = Path(output_dir)
    plan = ShardPlan(**json.loads((output / PLAN_FILE).read_text()))
    done = completed_tasks(output, plan)
    if len(done) < plan.tasks:
        raise ValueError(
            f"{output} is an unfinished sharded run ({len(done)} of {plan.tasks} tasks done): re-run the same "
            "`hf-maskdp anonymize` command to finish it"
        )
    files = {
        name: [
            str(output / "data" / plan.shard_name(name, rank))
            for rank in range(plan.tasks)
            if any(s == name for s, _, _ in plan.ranges(rank))
        ]
        for name in plan.splits
        if plan.splits[name]
    }
    if split is not None and split not in files:
        raise ValueError(f"split {split!r} not in {output} (splits: {list(files)})")
    loaded = datasets.load_dataset("parquet", data_files=files if split is None else {split: files[split]})
    return loaded if split is None else loaded[split]


def push_shards(
    output_dir, repo_id: str, *, private: bool = True, token: str | None = None, anonymizer_info=None
) -> str:
    """Upload `data/*.parquet` of a finished run as they are (no rewrite) plus the dataset card; private by default."""
    from huggingface_hub import DatasetCard, HfApi
    from huggingface_hub.errors import EntryNotFoundError

    from hf_maskdp.hub import (
        _check_token,
        _create_private_aware_repo,
        _resolve_token,
        check_mask_columns,
        dataset_card,
        hub_errors,
        summarize_dataset,
        validate_repo_id,
    )

    repo_id = validate_repo_id(repo_id)
    data = load_shards(output_dir)
    for name, part in data.items():
        check_mask_columns(part, where=f"split '{name}'")
    token = _resolve_token(token)
    _check_token(token, repo_id)
    url = _create_private_aware_repo(repo_id, "dataset", private, token)
    with hub_errors(repo_id, "push to"):
        HfApi(token=token).upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(output_dir),
            allow_patterns=["data/*.parquet"],
            commit_message="Upload anonymized shards (hf_maskdp)",
        )
        try:
            existing = DatasetCard.load(repo_id, repo_type="dataset", token=token)
        except EntryNotFoundError:  # a new repo: upload_folder wrote no card
            existing = None
        card = dataset_card(repo_id, anonymizer_info, summarize_dataset(data), existing=existing)
        card.push_to_hub(repo_id, token=token, repo_type="dataset", commit_message="Add hf_maskdp dataset card")
    return url


# --------------------------------------------------------------------------- command line


def run_from_args(args, config) -> int:
    """`hf-maskdp anonymize INPUT OUTPUT --tasks N ...` (the flags are defined in commands/anonymize.py)."""
    from hf_maskdp.commands.anonymize import format_summary

    if args.num_proc is not None:
        raise ValueError("--num-proc is for a single datasets.map; with --tasks use --workers W (processes at once)")
    given = {
        name: getattr(args, f"slurm_{name}") for name in SLURM_DEFAULTS if getattr(args, f"slurm_{name}") is not None
    }
    if given and args.executor != "slurm":
        raise ValueError(f"--slurm-* options ({', '.join(given)}) need --executor slurm")
    slurm = {**SLURM_DEFAULTS, **given}
    result = run_sharded(
        args.input,
        args.output_dir,
        config,
        tasks=args.tasks,
        workers=args.workers,
        executor=args.executor,
        split=args.split,
        batch_size=args.batch_size,
        overwrite=getattr(args, "overwrite", False),
        slurm=slurm,
    )
    skipped = f"{len(result.completed_before)} of {result.tasks} tasks already complete (skipped)"
    if not result.complete:
        print(
            f"submitted {len(result.ran)} tasks ({result.clips_run} clips) to Slurm, {skipped}; logs in "
            f"{logging_dir(args.output_dir)}. Run the same command again when the jobs end: it prints the summary"
            f"{' and pushes' if args.push_to_hub else ''} (or resubmits unfinished tasks)."
        )
        return 0
    print(f"this run: {len(result.ran)} tasks ({result.clips_run} clips) in {result.seconds:.1f} s, {skipped}")
    print(format_summary(result.summary, args.output_dir))
    if args.push_to_hub:
        url = push_shards(
            args.output_dir, args.push_to_hub, private=not args.public, token=args.token, anonymizer_info=config
        )
        print(f"pushed {result.tasks} tasks' shards to {url} ({'public' if args.public else 'private'})")
    return 0
