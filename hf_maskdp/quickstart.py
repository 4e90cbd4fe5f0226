"""The quickstart (`hf-maskdp quickstart`, `make demo`): the whole method on the embedded dataset.

    generate -> anonymize (real pose estimation) -> train one small VideoMAE in five settings
    -> evaluate on original and anonymized test clips -> table, plot, model and dataset cards

The five settings (issue 7): `none` and `dpsgd` on the original clips; `none`, `public_only`
and `maskdp` on the anonymized clips. Two extra sweeps answer open questions with measurements:
`dpsgd` and `maskdp` over several privacy budgets (the plot), and both public views (`fill`,
`drop`) for `public_only` and `maskdp` (which one should be the default).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

MAIN_SETTINGS = [  # (privacy_mode, training data)
    ("none", "original"),
    ("dpsgd", "original"),
    ("none", "anonymized"),
    ("public_only", "anonymized"),
    ("maskdp", "anonymized"),
]
KEPT_CLIPS = "keep, then only clips with status ok are used; the others are withheld"
RESULT_KEYS = ("setting", "train_data", "epsilon", "delta", "test_accuracy_original", "test_accuracy_anonymized",
               "train_seconds")  # fmt: skip


MODEL_FOLDER = "maskdp_model"  # under output_dir; the demo Space classifies with it


@dataclass
class QuickstartConfig:
    """Sizes of the quickstart run. The defaults take about ten minutes on two CPU cores."""

    output_dir: str = "quickstart_output"
    num_train: int = 128
    num_test: int = 48
    clip_frames: int = 8
    clip_size: int = 112  # rendered and anonymized at this size: mediapipe misses smaller people
    # the model: a small VideoMAE from a config (no pretrained weights offline), at the clip size:
    # resizing marks every pixel whose kernel touches a sensitive one, and at 64 px that erased
    # 80 % of the thin avatars' public pixels
    image_size: int = 112
    patch_size: int = 16
    hidden_size: int = 64
    num_layers: int = 2
    # training, identical in every setting; one batch size so every setting takes the same steps
    epochs: float = 12.0
    batch_size: int = 32
    learning_rate: float = 2e-3
    clip_norm: float = 1.0
    # the runs with a noisy private branch (dpsgd, maskdp): AdamW's per-coordinate scaling turns
    # noise-dominated coordinates into full-size random steps; SGD with momentum keeps the noise
    # averaging out (docs/benchmarks.md: dpsgd at eps = 2 / 4 went from 0.27 / 0.21 to 0.63 / 0.69)
    private_optim: str = "sgd"
    private_optim_args: str | None = "momentum=0.9"
    private_learning_rate: float | None = 0.05  # None: learning_rate
    private_grad_weight: float = 1.0  # lambda_priv; post-processing of the noisy gradient
    target_epsilon: float = 1.0
    delta: float = 1e-5
    epsilons: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    public_views: tuple[str, ...] = ("fill", "drop")  # the first is used in the five settings
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if self.num_train < self.batch_size:
            raise ValueError(f"num_train={self.num_train} must be >= batch_size={self.batch_size}")
        if self.num_test < 1 or self.clip_frames < 2 or self.clip_frames % 2:
            raise ValueError("need num_test >= 1 and an even clip_frames >= 2 (VideoMAE tubelets are 2 frames)")
        if not self.target_epsilon > 0 or not self.epsilons or min(self.epsilons) <= 0:
            raise ValueError("target_epsilon and every budget in epsilons must be > 0")
        if not self.public_views or not set(self.public_views) <= {"fill", "drop"}:
            raise ValueError(f"public_views={self.public_views!r}: choose from 'fill' and 'drop'")

    @classmethod
    def fast(cls, **overrides) -> QuickstartConfig:
        """A tiny run (about a minute): every stage and setting, a few steps each."""
        settings = dict(num_train=12, num_test=6, epochs=1.0, batch_size=4, hidden_size=32, num_layers=1,
                        epsilons=(0.5, 1.0))
        return cls(**{**settings, **overrides})


@dataclass
class QuickstartResult:
    rows: list[dict]
    anonymization: dict  # detection and status counts per split
    output_dir: Path
    files: dict = field(default_factory=dict)  # name -> path


def run_quickstart(config: QuickstartConfig | None = None) -> QuickstartResult:
    """Run every stage and write results.md, results.json, results.png, the MaskDP model and
    the anonymized dataset (each with its card) under `config.output_dir`."""
    config = config or QuickstartConfig()
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    original = _generate(config)
    anonymized, stats = _anonymize(original, config)
    anonymized.save_to_disk(str(output / "anonymized_dataset"))
    _write_dataset_card(anonymized, stats, config, output / "anonymized_dataset")

    data = {"original": _keyed(original, "original"), "anonymized": _keyed(anonymized, "anonymized")}
    collator = _MemoCollator(config)
    _preprocess(data, collator, config)
    rows = _train_all(data, collator, config, model_dir=output / MODEL_FOLDER)

    files = {"results.md": output / "results.md", "results.json": output / "results.json",
             "results.png": output / "results.png", "model": output / MODEL_FOLDER,
             "dataset": output / "anonymized_dataset"}  # fmt: skip
    total = time.perf_counter() - started
    files["results.json"].write_text(json.dumps(rows, indent=2))
    report = results_markdown(rows, stats, config, total)
    files["results.md"].write_text(report)
    plot_results(rows, files["results.png"], config)
    print(report)
    return QuickstartResult(rows, stats, output, files)


# ---------------------------------------------------------------------- data


def _generate(config: QuickstartConfig):
    from hf_maskdp.data import build_action_dataset

    return build_action_dataset(num_train=config.num_train, num_test=config.num_test,
                                num_frames=config.clip_frames, size=config.clip_size, seed=config.seed,
                                progress=config.progress)  # fmt: skip


def _anonymize(original, config: QuickstartConfig):
    """The real pipeline with `errors="keep"`, so a failed clip still shows which frames were
    detected; only clips with status `ok` are kept as the anonymized dataset."""
    from datasets import DatasetDict

    from hf_maskdp.anonymize.pipeline import AnonymizerConfig, AvatarAnonymizer
    from hf_maskdp.video import decode_mask

    anonymizer = AvatarAnonymizer(AnonymizerConfig(seed=config.seed, errors="keep"))
    kept, stats = {}, {}
    for split, clips in original.items():
        # only the video and the label go in: identity ids and ground-truth poses are not public
        clips = clips.select_columns(["video", "label"])
        result = clips.map(anonymizer, batched=True, batch_size=4, features=anonymizer.features(clips.features),
                           desc=f"anonymizing {split} clips (pose, avatar, inpaint)")  # fmt: skip
        detected = sum(int(decode_mask(m).any(axis=(1, 2)).sum()) for m in result["avatar_mask"])
        statuses = Counter(status.split(":")[0] for status in result["anonymization"])
        kept[split] = result.filter(lambda status: status == "ok", input_columns="anonymization")
        stats[split] = {"clips": len(clips), "frames": len(clips) * config.clip_frames,
                        "frames_with_person": detected, "status_counts": dict(sorted(statuses.items())),
                        "clips_kept": len(kept[split])}  # fmt: skip
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

    return {**AnonymizerConfig(seed=config.seed).to_dict(), "errors": KEPT_CLIPS}


def _keyed(dataset_dict, name: str) -> dict:
    """Each split with a `clip_key` column, the key `_MemoCollator` caches the clip under."""
    return {split: ds.add_column("clip_key", [f"{name}/{split}/{i}" for i in range(len(ds))])
            for split, ds in dataset_dict.items()}  # fmt: skip


class _MemoCollator:
    """`VideoClipCollator` with each clip's result cached by `clip_key`.

    The collator is deterministic (no random crops or frame draws), so a cached clip is exactly
    what it would return again; decoding an mp4 costs more than the tiny model's step, and every
    clip is read by many runs and epochs. The public view is cached separately, so the public
    branch still only ever sees what `public_batch` built from `m = 0` pixels.
    """

    def __init__(self, config: QuickstartConfig):
        from hf_maskdp.training.collator import VideoClipCollator

        self.collator = VideoClipCollator(num_frames=config.clip_frames, image_size=config.image_size)
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


def _preprocess(data: dict, collator: _MemoCollator, config: QuickstartConfig) -> None:
    """Decode and resize every clip once, before any timed training run."""
    from tqdm.auto import tqdm

    total = sum(len(ds) for splits in data.values() for ds in splits.values())
    with tqdm(total=total, desc="decoding clips", disable=not config.progress) as bar:
        for name, splits in data.items():
            for ds in splits.values():
                for row in ds:
                    collator([row])
                    if name == "anonymized":
                        collator.public_batch([row])
                    bar.update()


# ---------------------------------------------------------------------- training


def planned_runs(config: QuickstartConfig) -> list[dict]:
    """The five settings, then the public-view comparison, then the budget sweep."""
    from hf_maskdp.training.config import PUBLIC_VIEWS

    main_view = config.public_views[0]
    runs = []
    for mode, data in MAIN_SETTINGS:
        private = mode in ("dpsgd", "maskdp")
        view = main_view if mode in ("public_only", "maskdp") else None
        runs.append(dict(setting=mode, train_data=data, target=config.target_epsilon if private else None, view=view))
    for view in (v for v in config.public_views[1:] if v in PUBLIC_VIEWS):
        runs.append(dict(setting="public_only", train_data="anonymized", target=None, view=view))
        runs.append(dict(setting="maskdp", train_data="anonymized", target=config.target_epsilon, view=view))
    for epsilon in sorted(set(config.epsilons) - {config.target_epsilon}):
        runs.append(dict(setting="dpsgd", train_data="original", target=epsilon, view=None))
        runs.append(dict(setting="maskdp", train_data="anonymized", target=epsilon, view=main_view))
    return runs


def _train_all(data: dict, collator: _MemoCollator, config: QuickstartConfig, model_dir: Path) -> list[dict]:
    from tqdm.auto import tqdm

    runs = planned_runs(config)
    rows = []
    bar = tqdm(runs, desc="training models", disable=not config.progress)
    with tempfile.TemporaryDirectory() as scratch:  # the models that are not kept
        for i, run in enumerate(bar):
            bar.set_postfix_str(f"{run['setting']} on {run['train_data']}, eps={run['target']}, view={run['view']}")
            # the final MaskDP model: the fifth setting (target budget, the main public view)
            output_dir = model_dir if i == len(MAIN_SETTINGS) - 1 else Path(scratch) / str(i)
            rows.append(_train_and_evaluate(run, data, collator, config, output_dir, save=output_dir == model_dir))
    return rows


def build_model(config: QuickstartConfig):
    """The same small VideoMAE in every setting (same config, same seeded initial weights)."""
    import torch
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    from hf_maskdp.data import ACTION_NAMES

    torch.manual_seed(config.seed)
    model_config = VideoMAEConfig(
        image_size=config.image_size, patch_size=config.patch_size, num_frames=config.clip_frames, tubelet_size=2,
        hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
        num_attention_heads=max(1, config.hidden_size // 32), intermediate_size=4 * config.hidden_size,
        num_labels=len(ACTION_NAMES), id2label=dict(enumerate(ACTION_NAMES)),
        label2id={name: i for i, name in enumerate(ACTION_NAMES)},
    )
    return VideoMAEForVideoClassification(model_config)


def training_args(run: dict, config: QuickstartConfig, output_dir: Path):
    """The `MaskDPConfig` of one run: the same in every setting except the optimizer of the runs
    with a noisy private branch (`private_optim`, `private_learning_rate`, `private_grad_weight`)."""
    from hf_maskdp.training.config import DEFAULT_PUBLIC_VIEW, MaskDPConfig

    private = run["setting"] in ("dpsgd", "maskdp")
    optim, optim_args = (config.private_optim, config.private_optim_args) if private else ("adamw_torch", None)
    lr = (config.private_learning_rate or config.learning_rate) if private else config.learning_rate
    return MaskDPConfig(
        output_dir=str(output_dir), privacy_mode=run["setting"], target_epsilon=run["target"],
        target_delta=config.delta, per_sample_clip_norm=config.clip_norm,
        private_batch_size=config.batch_size, public_batch_size=config.batch_size,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        public_view=run["view"] or DEFAULT_PUBLIC_VIEW, num_train_epochs=config.epochs,
        learning_rate=lr, optim=optim, optim_args=optim_args, private_grad_weight=config.private_grad_weight,
        seed=config.seed, save_strategy="no", logging_strategy="no", report_to="none", use_cpu=True,
        disable_tqdm=True,
    )  # fmt: skip


def _train_and_evaluate(run: dict, data: dict, collator, config: QuickstartConfig, output_dir: Path,
                        save: bool = False) -> dict:
    from transformers.trainer_callback import PrinterCallback

    from hf_maskdp.training.trainer import MaskDPTrainer

    args = training_args(run, config, output_dir)
    trainer = MaskDPTrainer(model=build_model(config), args=args, train_dataset=data[run["train_data"]]["train"],
                            data_collator=collator)  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # one progress bar for all runs instead of a dict per run
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    accuracy = {name: _accuracy(trainer, data[name]["test"]) for name in ("original", "anonymized")}
    record = trainer.privacy_record()
    if save:
        trainer.save_model()
        _write_model_card(output_dir, record, accuracy, config)
    return {
        "setting": run["setting"],
        "train_data": run["train_data"],
        "epsilon": record["epsilon"],
        "delta": record["delta"],
        "test_accuracy_original": accuracy["original"],
        "test_accuracy_anonymized": accuracy["anonymized"],
        "train_seconds": round(seconds, 2),
        "public_view": record["public_view"],
        "noise_multiplier": record["noise_multiplier"],
        "steps": record["steps"],
    }


def _accuracy(trainer, test) -> float:
    prediction = trainer.predict(test)
    return float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())


def _write_model_card(model_dir: Path, record: dict, accuracy: dict, config: QuickstartConfig) -> None:
    from hf_maskdp.hub import write_model_card

    write_model_card(
        model_dir, record, model_name="maskdp-quickstart-videomae",
        dataset_info={"name": "hf-maskdp/quickstart-actions", "split": "train",
                      "anonymizer": _anonymizer_info(config)},
        eval_results={"accuracy_original_test_clips": accuracy["original"],
                      "accuracy_anonymized_test_clips": accuracy["anonymized"]},
    )  # fmt: skip


# ---------------------------------------------------------------------- report


def _fmt_epsilon(row: dict) -> str:
    if row["epsilon"] is None:
        return "∞ (not private)"
    return f"{row['epsilon']:.3g}"


def results_table(rows: list[dict]) -> str:
    lines = ["| setting | training data | public view | ε | δ | test acc. (original) | test acc. (anonymized) "
             "| train time (s) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        delta = "—" if row["delta"] is None else f"{row['delta']:g}"
        lines.append(
            f"| `{row['setting']}` | {row['train_data']} | {row['public_view'] or '—'} | {_fmt_epsilon(row)} "
            f"| {delta} | {row['test_accuracy_original']:.3f} | {row['test_accuracy_anonymized']:.3f} "
            f"| {row['train_seconds']:.1f} |"
        )
    return "\n".join(lines)


def results_markdown(rows: list[dict], stats: dict, config: QuickstartConfig, seconds: float) -> str:
    from hf_maskdp.data import ACTION_NAMES

    main, view = rows[: len(MAIN_SETTINGS)], config.public_views[0]
    views = [r for r in rows if r["setting"] == "public_only"
             or (r["setting"] == "maskdp" and _close(r["epsilon"], config.target_epsilon))]  # fmt: skip
    sweep = sorted((r for r in rows if r["setting"] in ("dpsgd", "maskdp") and r["public_view"] in (None, view)),
                   key=lambda r: (r["setting"], r["epsilon"]))  # fmt: skip
    detection = "\n".join(
        f"- {split}: {s['frames_with_person']}/{s['frames']} frames with a tracked person "
        f"({s['frames_with_person'] / s['frames']:.1%}); clips by status {s['status_counts']}; "
        f"{s['clips_kept']}/{s['clips']} clips fully anonymized and kept"
        for split, s in stats.items()
    )
    return f"""# MaskDP quickstart results

{len(ACTION_NAMES)} actions (chance = {1 / len(ACTION_NAMES):.3f}); {config.num_train} train and {config.num_test} test \
clips of {config.clip_frames} frames at {config.clip_size} px; VideoMAE ({config.num_layers} layers, hidden \
{config.hidden_size}, {config.image_size} px, patch {config.patch_size}) from a config, trained {config.epochs:g} \
epochs with batch {config.batch_size} (expected Poisson batch for the private branch) in every setting; \
optimizer AdamW lr {config.learning_rate:g}, but {config.private_optim} ({config.private_optim_args or 'defaults'}) \
lr {config.private_learning_rate or config.learning_rate:g} with λ_priv = {config.private_grad_weight:g} for dpsgd and maskdp; \
δ = {config.delta:g}. Total time {seconds / 60:.1f} min.

## Anonymization (mediapipe pose, mannequin avatars)

{detection}

## The five settings (target ε = {config.target_epsilon:g})

{results_table(main)}

## Public views: `fill` vs `drop` (at the same ε)

{results_table(views)}

## Accuracy against ε

{results_table(sweep)}

{claim_summary(rows, config)}

![accuracy against epsilon](results.png)
"""


def claim_summary(rows: list[dict], config: QuickstartConfig) -> str:
    """The paper's claim, checked on these numbers: at ε <= 1, maskdp on anonymized clips beats
    dpsgd on the original ones and is not worse than public_only."""
    view = config.public_views[0]
    public_only = next(r for r in rows if r["setting"] == "public_only" and r["public_view"] == view)
    lines = ["## The claim at ε ≤ 1 (accuracy on the original test clips)", ""]
    for epsilon in sorted(e for e in config.epsilons if e <= 1):
        dpsgd = _find(rows, "dpsgd", epsilon, None)
        maskdp = _find(rows, "maskdp", epsilon, view)
        if dpsgd is None or maskdp is None:
            continue
        gap, vs_public = (maskdp["test_accuracy_original"] - dpsgd["test_accuracy_original"],
                          maskdp["test_accuracy_original"] - public_only["test_accuracy_original"])  # fmt: skip
        lines.append(
            f"- ε = {epsilon:g}: maskdp {maskdp['test_accuracy_original']:.3f} vs dpsgd {dpsgd['test_accuracy_original']:.3f} "
            f"({gap:+.3f}: {'beats' if gap > 0 else 'does not beat'} it); vs public_only "
            f"{public_only['test_accuracy_original']:.3f} ({vs_public:+.3f}: {'not worse' if vs_public >= 0 else 'worse'})"
        )
    return "\n".join(lines)


def _find(rows, setting, target, view):
    return next((r for r in rows if r["setting"] == setting and r["public_view"] == view
                 and _close(r["epsilon"], target)), None)  # fmt: skip


def _close(epsilon, target) -> bool:
    """ε spent is calibrated to at most the target, within the calibration's tolerance."""
    return epsilon is not None and math.isclose(epsilon, target, rel_tol=0.02)


def plot_results(rows: list[dict], path: Path, config: QuickstartConfig) -> None:
    """Accuracy against ε for dpsgd and maskdp, with the settings without a budget as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hf_maskdp.data import ACTION_NAMES

    view = config.public_views[0]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, test in zip(axes, ("original", "anonymized")):
        key = f"test_accuracy_{test}"
        for setting, data, colour in (("dpsgd", "original", "tab:red"), ("maskdp", "anonymized", "tab:blue")):
            points = sorted((r["epsilon"], r[key]) for r in rows if r["setting"] == setting
                            and r["public_view"] == (view if setting == "maskdp" else None))  # fmt: skip
            ax.plot(*zip(*points), "o-", color=colour, label=f"{setting} ({data} clips)")
        for setting, data, style in (("none", "original", "k--"), ("none", "anonymized", "k:")):
            row = next(r for r in rows if r["setting"] == setting and r["train_data"] == data)
            ax.axhline(row[key], color=style[0], linestyle=style[1:], label=f"{setting} ({data} clips, not private)")
        public = next(r for r in rows if r["setting"] == "public_only" and r["public_view"] == view)
        ax.axhline(public[key], color="tab:green", linestyle="-.", label="public_only (ε = 0)")
        ax.axhline(1 / len(ACTION_NAMES), color="grey", linewidth=0.8, label="chance")
        ax.set_xscale("log")
        budgets = sorted({r["epsilon"] for r in rows if r["setting"] == "maskdp" and r["epsilon"]})
        ax.set_xticks(budgets, [f"{b:.2g}" for b in budgets])
        ax.minorticks_off()
        ax.set_ylim(0, 1)
        ax.set_xlabel("ε (δ = %g)" % config.delta)
        ax.set_title(f"tested on {test} clips")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[1].legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
