"""The quickstart (`hf-maskdp quickstart`, `make demo`): the paper's claim, measured on the embedded data.

    generate (private actions) -> anonymize (real pose estimation; cached by configuration)
    -> fine-tune a VideoMAE pretrained on public clips (`hf_maskdp.pretrain`) in every setting,
       several seeds -> evaluate on original, anonymized and public-view test clips
    -> table (mean ± std), claim lines, plot with error bars, model and dataset cards

Regimes (`regimes`): `ntu`, one scene for every action (the label is only in the person), and
`ucf`, scenes that hint at the label (what MaskDP's private branch is for). Beside each, a
background-only baseline (the most common training label per scene) says how much the scene
alone gives away. Every hyperparameter was chosen on the validation split (docs/benchmarks.md),
never on the test clips; each row also reports its validation accuracy.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hf_maskdp.constants import STATUS_OK

REGIMES = {  # name -> generator settings
    "ntu": dict(scenes=("brick_wall",), background_bias=0.0),  # mediapipe finds 90 % of people here (living room: 67 %)
    "ucf": dict(background_bias=0.6),
}
RESULT_KEYS = (
    "regime",
    "setting",
    "train_data",
    "public_view",
    "init",
    "seed",
    "epsilon",
    "delta",
    "num_private_records",
    "test_accuracy_original",
    "test_accuracy_anonymized",
    "test_accuracy_public_view",
    "val_accuracy_original",
    "train_seconds",
)
MODEL_FOLDER = "maskdp_model"  # under output_dir; the demo Space classifies with it
RUNS_LOG = "runs.jsonl"  # under output_dir; finished runs, so an interrupted run resumes
KEPT_CLIPS = "keep, then only clips with status ok are used; the others are withheld"


@dataclass
class QuickstartConfig:
    """Sizes and settings of a quickstart run (`preset("demo")`, the default, fits `make demo`)."""

    output_dir: str = "quickstart_output"
    regimes: tuple[str, ...] = ("ntu",)
    num_train: int = 144
    num_val: int = 36
    num_test: int = 72
    clip_frames: int = 8
    clip_size: int = 112
    # "public": fine-tune `pretrained_model` (public data only, no budget); "scratch": random init
    init: str = "public"
    pretrained_model: str = ""  # a Hub id or folder; "" = the checkpoint shipped in the package
    # the model shape when init="scratch" (a pretrained model brings its own)
    patch_size: int = 16
    hidden_size: int = 64
    num_layers: int = 2
    epochs: float = 6.0
    batch_size: int = 32  # also the expected Poisson batch of the private branch
    learning_rate: float = 1e-3  # AdamW, the runs without noise
    clip_norm: float = 1.0
    # runs with a noisy private branch: SGD with momentum (with AdamW, maskdp's noise drowns the
    # public gradient in Adam's per-coordinate scaling)
    private_optim: str = "sgd"
    private_optim_args: str | None = "momentum=0.9"
    private_learning_rate: float = 0.05
    private_grad_weight: float = 0.1  # lambda_priv of maskdp (dpsgd has no public branch: 1)
    # dpsgd's noisy update through AdamW at `learning_rate` instead of `private_optim` (DP-Adam: the
    # same noisy gradient, other post-processing); won on dpsgd's validation at ~1000 records
    dpsgd_adamw: bool = False
    # maskdp with Adam moments per branch (MaskDPConfig.branch_adam) at `learning_rate`, stepped by
    # plain SGD, instead of `private_optim`: the noise no longer sets the public gradient's scale
    maskdp_branch_adam: bool = False
    public_view: str = "fill"
    public_fill: str = "mean"  # chosen on validation at the demo's size; the benchmark preset: "scene"
    delta: float = 1e-5
    target_epsilon: float = 1.0  # the saved MaskDP model's budget
    claim_epsilons: tuple[float, ...] = (0.25, 0.5, 1.0)  # every seed runs these
    sweep_epsilons: tuple[float, ...] = (2.0, 4.0)  # the first `sweep_seeds` seeds run these
    seeds: tuple[int, ...] = (0, 1, 2)
    sweep_seeds: int = 1
    data_seed: int = 0
    num_proc: int = 1  # anonymization processes
    cache_dir: str | None = None  # anonymized data cache; None: $HF_MASKDP_CACHE or ~/.cache/hf_maskdp
    progress: bool = True

    def __post_init__(self):
        self.regimes = tuple(self.regimes)
        if not self.regimes or set(self.regimes) - set(REGIMES):
            raise ValueError(f"regimes={self.regimes!r}: choose from {tuple(REGIMES)}")
        if self.num_train < self.batch_size:
            raise ValueError(f"num_train={self.num_train} must be >= batch_size={self.batch_size}")
        if min(self.num_val, self.num_test) < 1 or self.clip_frames < 2 or self.clip_frames % 2:
            raise ValueError(
                "need num_val, num_test >= 1 and an even clip_frames >= 2 (VideoMAE tubelets are 2 frames)"
            )
        if self.init not in ("public", "scratch"):
            raise ValueError(f"init={self.init!r}: choose 'public' (pretrained on public clips) or 'scratch'")
        budgets = (*self.claim_epsilons, *self.sweep_epsilons, self.target_epsilon)
        if not self.claim_epsilons or min(budgets) <= 0:
            raise ValueError("every privacy budget must be > 0 and claim_epsilons must not be empty")
        if self.target_epsilon not in self.claim_epsilons + self.sweep_epsilons:
            raise ValueError(f"target_epsilon={self.target_epsilon} must be one of the budgets run")
        if not self.seeds or not 1 <= self.sweep_seeds <= len(self.seeds):
            raise ValueError("need at least one seed and 1 <= sweep_seeds <= len(seeds)")

    @classmethod
    def preset(cls, name: str, **overrides) -> QuickstartConfig:
        """`demo` (make demo, <= 10 min on 2 cores), `benchmark` (>= 1000 private records, both
        regimes, every budget with every seed) or `fast` (every stage in about a minute, for tests)."""
        presets = {
            "demo": {},
            "benchmark": dict(
                regimes=("ntu", "ucf"),
                num_train=1024,
                num_val=96,
                num_test=192,
                epochs=8.0,
                sweep_seeds=3,
                num_proc=2,
                public_fill="scene",  # won on validation at ~1000 records (mean did at ~200): docs/benchmarks.md
                dpsgd_adamw=True,  # dpsgd's validation choice at every budget at this size: docs/benchmarks.md
            ),
            "fast": dict(
                num_train=12,
                num_val=6,
                num_test=6,
                epochs=1.0,
                batch_size=4,
                seeds=(0, 1),
                claim_epsilons=(0.5, 1.0),
                sweep_epsilons=(),
            ),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}: choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    @classmethod
    def fast(cls, **overrides) -> QuickstartConfig:
        return cls.preset("fast", **overrides)


@dataclass
class QuickstartResult:
    rows: list[dict]
    anonymization: dict  # regime -> split -> detection and status counts
    output_dir: Path
    files: dict = field(default_factory=dict)  # name -> path


def run_quickstart(config: QuickstartConfig | None = None) -> QuickstartResult:
    """Run every regime and write results.md, results.json, results.png, the MaskDP model (first
    regime, target budget, first seed) and the first regime's anonymized dataset, with cards."""
    config = config or QuickstartConfig()
    _check_clip_shape(config)  # before hours of anonymization, not at the first training run
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows, stats = [], {}
    finished = _FinishedRuns(output / RUNS_LOG, config)
    for number, regime in enumerate(config.regimes):
        original = _generate(config, regime)
        anonymized, stats[regime] = _anonymize_cached(original, config, regime)
        if number == 0:
            anonymized.save_to_disk(str(output / "anonymized_dataset"))
            _write_dataset_card(anonymized, stats[regime], config, output / "anonymized_dataset")
        data = {
            "original": _keyed(original, f"{regime}/original"),
            "anonymized": _keyed(anonymized, f"{regime}/anonymized"),
        }
        collator = _MemoCollator(config)
        rows.append(_background_baseline(original, regime, config))
        model_dir = output / MODEL_FOLDER if number == 0 else None
        rows += _train_all(regime, data, collator, config, model_dir, finished)

    files = {name: output / name for name in ("results.md", "results.json", "results.png")}
    files.update(model=output / MODEL_FOLDER, dataset=output / "anonymized_dataset")
    files["results.json"].write_text(json.dumps(rows, indent=2))
    report = results_markdown(rows, stats, config, time.perf_counter() - started)
    files["results.md"].write_text(report)
    plot_results(rows, files["results.png"], config)
    print(report)
    return QuickstartResult(rows, stats, output, files)


# ---------------------------------------------------------------------- data


def generator_config(config: QuickstartConfig, regime: str):
    from hf_maskdp.data.build import ActionDatasetConfig
    from hf_maskdp.pretrain import BENCHMARK_PERSON_HEIGHT, BENCHMARK_REPETITIONS

    return ActionDatasetConfig(
        num_frames=config.clip_frames,
        size=config.clip_size,
        seed=config.data_seed,
        person_height=BENCHMARK_PERSON_HEIGHT,
        repetitions=BENCHMARK_REPETITIONS,
        **REGIMES[regime],
    )


def _generate(config: QuickstartConfig, regime: str):
    from hf_maskdp.data.build import build_action_dataset_from_config

    sizes = {"train": config.num_train, "validation": config.num_val, "test": config.num_test}
    return build_action_dataset_from_config(generator_config(config, regime), sizes, progress=config.progress)


def _anonymize_cached(original, config: QuickstartConfig, regime: str):
    """Anonymize with the real pipeline, or load the result of an identical earlier run."""
    from datasets import load_from_disk

    folder = _cache_folder(config, regime)
    if (folder / "stats.json").exists():
        print(f"anonymized {regime} clips: reusing {folder}")
        return load_from_disk(str(folder / "dataset")), json.loads((folder / "stats.json").read_text())
    anonymized, stats = _anonymize(original, config)
    anonymized.save_to_disk(str(folder / "dataset"))
    (folder / "stats.json").write_text(json.dumps(stats))  # written last: marks the entry complete
    return anonymized, stats


def _cache_folder(config: QuickstartConfig, regime: str) -> Path:
    import hf_maskdp
    from hf_maskdp import anonymize
    from hf_maskdp.privacy.mask_checks import PROVENANCE_COLUMN

    key = {
        "version": hf_maskdp.__version__,
        "generator": asdict(generator_config(config, regime)),
        "sizes": [config.num_train, config.num_val, config.num_test],
        "anonymizer": _anonymizer_info(config),
        # the code too: a changed anonymizer (say, a stricter residual check) must not reuse what the old one kept
        "anonymizer_code": _digest([path.read_text() for path in sorted(Path(anonymize.__file__).parent.glob("*.py"))]),
        "provenance": PROVENANCE_COLUMN,  # rows cached before the anonymizer wrote it would be refused
    }
    root = config.cache_dir or os.environ.get("HF_MASKDP_CACHE") or Path.home() / ".cache" / "hf_maskdp"
    return Path(root) / "quickstart" / f"{regime}-{_digest(key)}"


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _anonymize(original, config: QuickstartConfig):
    """The real pipeline with `errors="keep"`, so a failed clip still shows which frames were
    detected; only clips with status `ok` are kept as the anonymized dataset."""
    from datasets import DatasetDict

    from hf_maskdp.anonymize.pipeline import AnonymizerConfig, AvatarAnonymizer
    from hf_maskdp.video import decode_mask

    anonymizer = AvatarAnonymizer(AnonymizerConfig(seed=config.data_seed, errors="keep"))
    kept, stats = {}, {}
    for split, clips in original.items():
        # only the video and the label go in: identities, scenes and ground-truth poses are not published
        clips = clips.select_columns(["video", "label"])
        result = clips.map(
            anonymizer,
            batched=True,
            batch_size=4,
            features=anonymizer.features(clips.features),
            num_proc=config.num_proc if config.num_proc > 1 else None,
            desc=f"anonymizing {split} clips (pose, avatar, inpaint)",
        )
        detected = sum(int(decode_mask(m).any(axis=(1, 2)).sum()) for m in result["avatar_mask"])
        statuses = Counter(status.split(":")[0] for status in result["anonymization"])
        kept[split] = result.filter(lambda status: status == STATUS_OK, input_columns="anonymization")
        stats[split] = {
            "clips": len(clips),
            "frames": len(clips) * config.clip_frames,
            "frames_with_person": detected,
            "status_counts": dict(sorted(statuses.items())),
            "clips_kept": len(kept[split]),
        }
    if any(len(split) == 0 for split in kept.values()):
        raise ValueError(
            f"the anonymizer accepted no clip in some split ({stats}); check that mediapipe 0.10.21 is "
            "installed (pip install --no-deps mediapipe==0.10.21) and that rendering works "
            "(apt-get install libegl1 libgl1-mesa-dri)"
        )
    return DatasetDict(kept), stats


def _write_dataset_card(anonymized, stats: dict, config: QuickstartConfig, folder: Path) -> None:
    from hf_maskdp.hub import dataset_card, summarize_dataset

    withheld = sum(s["clips"] - s["clips_kept"] for s in stats.values())
    total = sum(s["clips"] for s in stats.values())
    anonymizer_info = {**_anonymizer_info(config), "errors": f"{KEPT_CLIPS} ({withheld} of {total} clips withheld)"}
    card = dataset_card("hf-maskdp/quickstart-actions", anonymizer_info, summarize_dataset(anonymized))
    card.save(str(folder / "README.md"))


def _anonymizer_info(config: QuickstartConfig) -> dict:
    from hf_maskdp.anonymize.pipeline import AnonymizerConfig

    return {**AnonymizerConfig(seed=config.data_seed).to_dict(), "errors": KEPT_CLIPS}


def _keyed(dataset_dict, name: str) -> dict:
    """Each split with a `clip_key` column, the key `_MemoCollator` caches the clip under."""
    return {
        split: ds.add_column("clip_key", [f"{name}/{split}/{i}" for i in range(len(ds))])
        for split, ds in dataset_dict.items()
    }


class _MemoCollator:
    """`VideoClipCollator` with each clip's result cached by `clip_key`.

    The collator is deterministic (no random crops or frame draws), so a cached clip is exactly
    what it would return again; decoding an mp4 costs more than the tiny model's step, and every
    clip is read by many runs and epochs. The public view is cached separately, so the public
    branch still only ever sees what `public_batch` built from `m = 0` pixels.
    """

    def __init__(self, config: QuickstartConfig):
        from hf_maskdp.training.collator import VideoClipCollator

        self.collator = VideoClipCollator(
            num_frames=config.clip_frames,
            image_size=config.clip_size,
            public_fill=config.public_fill,
            public_fill_seed=config.data_seed,
        )
        self._full, self._public = {}, {}

    def __call__(self, rows: list[dict]) -> dict:
        return self._stack(rows, self._full, self.collator)

    def public_batch(self, rows: list[dict]) -> dict:
        return self._stack(rows, self._public, self.collator.public_batch)

    @staticmethod
    def _stack(rows, cache, collate):
        import torch

        for row in rows:
            if row["clip_key"] not in cache:
                cache[row["clip_key"]] = collate([row])
        parts = [cache[row["clip_key"]] for row in rows]
        return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


# ---------------------------------------------------------------------- training


def planned_runs(config: QuickstartConfig) -> list[dict]:
    """Per regime: the non-private references, then every seed's public_only, dpsgd and maskdp runs
    at the claim budgets, then the budget sweep for the first `sweep_seeds` seeds."""
    runs = [
        dict(setting="none", train_data="original", target=None, seed=config.seeds[0]),
        dict(setting="none", train_data="anonymized", target=None, seed=config.seeds[0]),
    ]
    for i, seed in enumerate(config.seeds):
        runs.append(dict(setting="public_only", train_data="anonymized", target=None, seed=seed))
        budgets = config.claim_epsilons + (config.sweep_epsilons if i < config.sweep_seeds else ())
        for epsilon in budgets:
            runs.append(dict(setting="dpsgd", train_data="original", target=epsilon, seed=seed))
            runs.append(dict(setting="maskdp", train_data="anonymized", target=epsilon, seed=seed))
    return runs


class _FinishedRuns:
    """`runs.jsonl` in the output folder: each finished run's row, appended as soon as it ends, so
    an interrupted quickstart (the benchmark preset takes hours) resumes where it stopped. Rows of
    another configuration or package version are ignored, never mixed in."""

    def __init__(self, path: Path, config: QuickstartConfig):
        import hf_maskdp

        settings = {
            k: v for k, v in asdict(config).items() if k not in ("output_dir", "num_proc", "cache_dir", "progress")
        }
        self.path = path
        self.fingerprint = _digest({"version": hf_maskdp.__version__, "config": settings})
        self.rows = {}
        text = path.read_text() if path.exists() else ""
        lines = text.splitlines()
        if text and not text.endswith("\n"):  # killed while appending: drop the torn line
            lines = lines[:-1]
            path.write_text("".join(line + "\n" for line in lines))
        for line in lines:
            entry = json.loads(line)
            if entry["fingerprint"] == self.fingerprint:
                self.rows[entry["run"]] = entry["row"]
        if self.rows:
            print(f"resuming: {len(self.rows)} finished runs of this configuration in {path}")

    def key(self, regime: str, run: dict) -> str:
        return json.dumps([regime, run["setting"], run["train_data"], run["target"], run["seed"]])

    def add(self, key: str, row: dict) -> None:
        self.rows[key] = row
        with self.path.open("a") as log:
            log.write(json.dumps({"fingerprint": self.fingerprint, "run": key, "row": row}) + "\n")


def _train_all(
    regime: str, data: dict, collator, config: QuickstartConfig, model_dir: Path | None, finished: _FinishedRuns
) -> list[dict]:
    from tqdm.auto import tqdm

    rows = []
    bar = tqdm(planned_runs(config), desc=f"training ({regime})", disable=not config.progress)
    with tempfile.TemporaryDirectory() as scratch:  # the models that are not kept
        for i, run in enumerate(bar):
            bar.set_postfix_str(f"{run['setting']} on {run['train_data']}, eps={run['target']}, seed={run['seed']}")
            keep = (
                model_dir is not None
                and run["setting"] == "maskdp"
                and run["seed"] == config.seeds[0]
                and run["target"] == config.target_epsilon
            )
            key = finished.key(regime, run)
            saved = not keep or (model_dir / "README.md").exists()  # a kept model must be on disk to skip its run
            if key in finished.rows and saved:
                rows.append(finished.rows[key])
                continue
            output_dir = model_dir if keep else Path(scratch) / str(i)
            rows.append(_train_and_evaluate(regime, run, data, collator, config, output_dir, save=keep))
            finished.add(key, rows[-1])
    return rows


def _check_clip_shape(config: QuickstartConfig) -> None:
    """A pretrained VideoMAE takes clips of its own length and size only."""
    from transformers import AutoConfig

    from hf_maskdp.pretrain import shipped_checkpoint

    if config.init != "public":
        return
    model = AutoConfig.from_pretrained(config.pretrained_model or shipped_checkpoint())
    if (model.num_frames, model.image_size) != (config.clip_frames, config.clip_size):
        raise ValueError(
            f"the pretrained model takes clips of {model.num_frames} frames at {model.image_size} px, the "
            f"quickstart makes {config.clip_frames} at {config.clip_size}: set clip_frames (--clip-frames) and "
            "clip_size to the model's, or pretrain one of this shape (hf-maskdp pretrain DIR --clip-frames N)"
        )


def build_model(config: QuickstartConfig, seed: int):
    """The model every setting starts from: the public checkpoint (fresh head) or a random init."""
    import torch

    from hf_maskdp.data import ACTION_NAMES
    from hf_maskdp.pretrain import load_pretrained_backbone, shipped_checkpoint
    from hf_maskdp.training.model import videomae_classifier

    if config.init == "public":
        return load_pretrained_backbone(config.pretrained_model or shipped_checkpoint(), ACTION_NAMES, seed=seed)
    torch.manual_seed(seed)
    return videomae_classifier(
        ACTION_NAMES,
        image_size=config.clip_size,
        num_frames=config.clip_frames,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        patch_size=config.patch_size,
    )


def training_args(run: dict, config: QuickstartConfig, output_dir: Path):
    """The `MaskDPConfig` of one run: the same in every setting except the optimizer of the runs
    with a noisy private branch (`private_optim`, `private_learning_rate`, `private_grad_weight`,
    `dpsgd_adamw`, `maskdp_branch_adam`)."""
    from hf_maskdp.training.config import MaskDPConfig

    branch_adam = run["setting"] == "maskdp" and config.maskdp_branch_adam
    private_optimizer = (run["setting"] == "maskdp" and not branch_adam) or (
        run["setting"] == "dpsgd" and not config.dpsgd_adamw
    )
    optim, optim_args = (
        (config.private_optim, config.private_optim_args) if private_optimizer else ("adamw_torch", None)
    )
    if branch_adam:
        optim, optim_args = "sgd", None  # the branches' Adam moments are the preconditioner and momentum
    return MaskDPConfig(
        output_dir=str(output_dir),
        privacy_mode=run["setting"],
        target_epsilon=run["target"],
        target_delta=config.delta,
        per_sample_clip_norm=config.clip_norm,
        private_batch_size=config.batch_size,
        public_batch_size=config.batch_size,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=64,
        public_view=config.public_view,
        num_train_epochs=config.epochs,
        learning_rate=config.private_learning_rate if private_optimizer else config.learning_rate,
        optim=optim,
        optim_args=optim_args,
        branch_adam=branch_adam,
        private_grad_weight=config.private_grad_weight if run["setting"] == "maskdp" else 1.0,
        seed=run["seed"],
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )


def _train_and_evaluate(
    regime: str, run: dict, data: dict, collator, config: QuickstartConfig, output_dir: Path, save: bool = False
) -> dict:
    from transformers.trainer_callback import PrinterCallback

    from hf_maskdp.training.trainer import MaskDPTrainer

    args = training_args(run, config, output_dir)
    trainer = MaskDPTrainer(
        model=build_model(config, run["seed"]),
        args=args,
        train_dataset=data[run["train_data"]]["train"],
        data_collator=collator,
    )
    trainer.remove_callback(PrinterCallback)  # one progress bar for all runs instead of a dict per run
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    accuracy = {
        "test_accuracy_original": _accuracy(trainer, data["original"]["test"]),
        "test_accuracy_anonymized": _accuracy(trainer, data["anonymized"]["test"]),
        "test_accuracy_public_view": _accuracy(trainer, data["anonymized"]["test"], public_view=True),
        "val_accuracy_original": _accuracy(trainer, data["original"]["validation"]),
    }
    record = trainer.privacy_record()
    if save:
        trainer.save_model()
        _write_model_card(output_dir, record, accuracy, config)
    return {
        "regime": regime,
        "setting": run["setting"],
        "train_data": run["train_data"],
        "public_view": record["public_view"],
        "init": config.init,
        "seed": run["seed"],
        "epsilon": record["epsilon"],
        "delta": record["delta"],
        "num_private_records": len(data[run["train_data"]]["train"]),
        **accuracy,
        "train_seconds": round(seconds, 2),
        "noise_multiplier": record["noise_multiplier"],
        "steps": record["steps"],
    }


def _accuracy(trainer, dataset, public_view: bool = False) -> float:
    import torch

    collate = trainer.data_collator.public_batch if public_view else trainer.data_collator
    model = trainer.model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(dataset), 64):
            batch = collate([dataset[i] for i in range(start, min(start + 64, len(dataset)))])
            correct += int((model(pixel_values=batch["pixel_values"]).logits.argmax(-1) == batch["labels"]).sum())
    return correct / len(dataset)


def _background_baseline(original, regime: str, config: QuickstartConfig) -> dict:
    """Predict the most common training label of the clip's scene: what the scene alone gives away."""
    train, test, val = original["train"], original["test"], original["validation"]
    by_scene: dict[str, Counter] = {}
    for scene, label in zip(train["background"], train["label"]):
        by_scene.setdefault(scene, Counter())[label] += 1
    overall = Counter(train["label"]).most_common(1)[0][0]

    def accuracy(split) -> float:
        guesses = [by_scene[s].most_common(1)[0][0] if s in by_scene else overall for s in split["background"]]
        return sum(g == y for g, y in zip(guesses, split["label"])) / len(split)

    return {
        "regime": regime,
        "setting": "background_only",
        "train_data": "original",
        "public_view": None,
        "init": None,
        "seed": None,
        "epsilon": None,
        "delta": None,
        "num_private_records": len(train),
        "test_accuracy_original": accuracy(test),
        "test_accuracy_anonymized": None,
        "test_accuracy_public_view": None,
        "val_accuracy_original": accuracy(val),
        "train_seconds": 0.0,
    }


def _write_model_card(model_dir: Path, record: dict, accuracy: dict, config: QuickstartConfig) -> None:
    from hf_maskdp.hub import write_model_card

    write_model_card(
        model_dir,
        record,
        model_name="maskdp-quickstart-videomae",
        dataset_info={"name": "hf-maskdp/quickstart-actions", "split": "train", "anonymizer": _anonymizer_info(config)},
        eval_results={
            "accuracy_original_test_clips": accuracy["test_accuracy_original"],
            "accuracy_anonymized_test_clips": accuracy["test_accuracy_anonymized"],
        },
    )


# ---------------------------------------------------------------------- report


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds per (regime, setting, budget)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        budget = None if row["epsilon"] is None else _budget(row["epsilon"])
        groups.setdefault((row["regime"], row["setting"], row["train_data"], budget), []).append(row)
    summary = []
    for (regime, setting, data, budget), members in groups.items():
        entry = {"regime": regime, "setting": setting, "train_data": data, "epsilon": budget, "runs": len(members)}
        for key in (
            "test_accuracy_original",
            "test_accuracy_anonymized",
            "test_accuracy_public_view",
            "val_accuracy_original",
        ):
            values = [m[key] for m in members if m[key] is not None]
            entry[key] = statistics.fmean(values) if values else None
            entry[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.append(entry)
    return summary


def _budget(epsilon: float) -> float:
    """The target a spent ε was calibrated to (within the calibration's 2 % tolerance, never above)."""
    return float(f"{epsilon:.2g}") if epsilon > 0 else 0.0


def _cell(entry: dict, key: str) -> str:
    if entry[key] is None:
        return "—"
    return f"{entry[key]:.3f} ± {entry[key + '_std']:.3f}" if entry["runs"] > 1 else f"{entry[key]:.3f}"


def results_table(summary: list[dict]) -> str:
    lines = [
        "| setting | training data | ε | runs | test acc. (original) | test acc. (anonymized) "
        "| test acc. (public view) | val acc. (original) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        epsilon = (
            "∞ (not private)" if e["epsilon"] is None and e["setting"] != "public_only" else f"{e['epsilon'] or 0:g}"
        )
        if e["setting"] == "background_only":
            epsilon = "— (no training)"
        lines.append(
            f"| `{e['setting']}` | {e['train_data']} | {epsilon} | {e['runs']} | "
            + " | ".join(
                _cell(e, k)
                for k in (
                    "test_accuracy_original",
                    "test_accuracy_anonymized",
                    "test_accuracy_public_view",
                    "val_accuracy_original",
                )
            )
            + " |"
        )
    return "\n".join(lines)


def claim_summary(summary: list[dict], config: QuickstartConfig, regime: str) -> str:
    """The paper's claim on the means: at ε <= 1, maskdp beats dpsgd by >= 0.15 and is not worse
    than public_only (by more than 0.02)."""
    entry = {(e["setting"], e["epsilon"]): e for e in summary if e["regime"] == regime}
    public_only = entry[("public_only", 0.0)]["test_accuracy_original"]
    lines = []
    for epsilon in config.claim_epsilons:
        dpsgd, maskdp = entry.get(("dpsgd", epsilon)), entry.get(("maskdp", epsilon))
        if dpsgd is None or maskdp is None:
            continue
        gap = maskdp["test_accuracy_original"] - dpsgd["test_accuracy_original"]
        vs_public = maskdp["test_accuracy_original"] - public_only
        holds = gap >= 0.15 and vs_public >= -0.02
        lines.append(
            f"- ε = {epsilon:g}: maskdp {_cell(maskdp, 'test_accuracy_original')} vs dpsgd "
            f"{_cell(dpsgd, 'test_accuracy_original')} ({gap:+.3f}); vs public_only {public_only:.3f} "
            f"({vs_public:+.3f}): claim **{'holds' if holds else 'does not hold'}**"
        )
    return "\n".join(lines)


def results_markdown(rows: list[dict], stats: dict, config: QuickstartConfig, seconds: float) -> str:
    from hf_maskdp.data import ACTION_NAMES

    summary = summarize(rows)
    sections = []
    for regime in config.regimes:
        detection = "\n".join(
            f"- {split}: {s['frames_with_person']}/{s['frames']} frames with a tracked person "
            f"({s['frames_with_person'] / s['frames']:.1%}); clips by status {s['status_counts']}; "
            f"{s['clips_kept']}/{s['clips']} clips fully anonymized and kept"
            for split, s in stats[regime].items()
        )
        table = results_table([e for e in summary if e["regime"] == regime])
        sections.append(f"""## Regime `{regime}`: {_REGIME_TEXT[regime]}

{detection}

{table}

The claim at ε ≤ 1 (means over seeds, accuracy on the original test clips; holds when maskdp ≥ dpsgd + 0.15
and maskdp ≥ public_only − 0.02):

{claim_summary(summary, config, regime)}
""")
    init = (
        f"pretrained on public clips (`{config.pretrained_model or 'the shipped checkpoint'}`)"
        if config.init == "public"
        else "random init"
    )
    return f"""# MaskDP quickstart results

{len(ACTION_NAMES)} actions (chance = {1 / len(ACTION_NAMES):.3f}); {config.num_train} train, {config.num_val} \
validation and {config.num_test} test clips of {config.clip_frames} frames at {config.clip_size} px per regime; \
VideoMAE {init}, fine-tuned {config.epochs:g} epochs, batch {config.batch_size} (the expected Poisson batch of \
the private branch); AdamW lr {config.learning_rate:g} without noise, {config.private_optim} \
({config.private_optim_args or "defaults"}) lr {config.private_learning_rate:g} with noise \
({"maskdp; dpsgd: AdamW" if config.dpsgd_adamw else "maskdp and dpsgd"}), λ_priv = {config.private_grad_weight:g} for maskdp; public view `{config.public_view}` ({config.public_fill} fill); δ = {config.delta:g}; seeds \
{list(config.seeds)} (budgets {list(config.sweep_epsilons)} with the first {config.sweep_seeds}). \
Mean ± standard deviation over seeds. Total time {seconds / 60:.1f} min.

{"".join(sections)}
![accuracy against epsilon](results.png)
"""


_REGIME_TEXT = {
    "ntu": "one scene for every action (the label is only in the person)",
    "ucf": "scenes hint at the label (the preferred scene 60 % of the time)",
}


def plot_results(rows: list[dict], path: Path, config: QuickstartConfig) -> None:
    """Accuracy on original test clips against ε per regime, error bars over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hf_maskdp.data import ACTION_NAMES

    summary = summarize(rows)
    figure, axes = plt.subplots(1, len(config.regimes), figsize=(5.8 * len(config.regimes), 4.2), squeeze=False)
    for ax, regime in zip(axes[0], config.regimes):
        entries = [e for e in summary if e["regime"] == regime]
        for setting, colour in (("dpsgd", "tab:red"), ("maskdp", "tab:blue")):
            points = sorted(
                (e["epsilon"], e["test_accuracy_original"], e["test_accuracy_original_std"])
                for e in entries
                if e["setting"] == setting
            )
            xs, ys, errs = zip(*points)
            ax.errorbar(
                xs,
                ys,
                yerr=errs,
                fmt="o-",
                capsize=3,
                color=colour,
                label=f"{setting} ({'original' if setting == 'dpsgd' else 'anonymized'} clips)",
            )
        for setting, data, style, colour in (
            ("none", "original", "--", "k"),
            ("none", "anonymized", ":", "k"),
            ("public_only", "anonymized", "-.", "tab:green"),
            ("background_only", "original", (0, (1, 3)), "tab:brown"),
        ):
            entry = next(e for e in entries if e["setting"] == setting and e["train_data"] == data)
            label = {
                "none": f"none ({data}, not private)",
                "public_only": "public_only (ε = 0)",
                "background_only": "scene only (no person)",
            }[setting]
            ax.axhline(entry["test_accuracy_original"], color=colour, linestyle=style, label=label)
        ax.axhline(1 / len(ACTION_NAMES), color="grey", linewidth=0.8, label="chance")
        budgets = sorted({e["epsilon"] for e in entries if e["setting"] in ("dpsgd", "maskdp")})
        ax.set_xscale("log")
        ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
        ax.minorticks_off()
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"ε (δ = {config.delta:g})")
        ax.set_title(f"{regime}: {_REGIME_TEXT[regime]}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (original clips)")
    axes[0][-1].legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
