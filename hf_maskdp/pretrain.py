"""Public pretraining (`hf-maskdp pretrain`): a VideoMAE that has seen only public video.

The paper fine-tunes a VideoMAE pretrained on public data (Kinetics) on the private data. Offline,
the public corpus here is rendered the same way: avatars (public by construction) of a population
disjoint from the private one, performing a *different* action vocabulary
(`hf_maskdp.data.PUBLIC_ACTIONS`, as Kinetics' classes are not UCF-101's) in front of photos no
private clip uses (`PUBLIC_BACKGROUND_NAMES`). Nothing here reads private data, so the checkpoint
costs no privacy budget.

Pretraining is supervised on that vocabulary (`epochs`), optionally after self-supervised
VideoMAE tube masking (`masked_epochs`: reconstruct the hidden 90 % of each clip's patches, as
`MCG-NJU/videomae-base` was pretrained; `epochs=0` keeps it self-supervised only). A share of the
clips is shown with the background replaced by the mean colour, as MaskDP's `fill` public view
shows avatars, so the features serve both the public view and full clips. The result is an
ordinary `save_pretrained` folder with a card; the quickstart loads it with `from_pretrained`, the
same code path as `MCG-NJU/videomae-base`. A copy ships in the package (`SHIPPED_CHECKPOINT`,
rebuilt by `hf-maskdp pretrain` with the defaults below).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SHIPPED_CHECKPOINT = Path(__file__).parent / "assets" / "videomae-public-actions"


@dataclass
class PretrainConfig:
    output_dir: str = "videomae-public-actions"
    num_train: int = 2400
    num_test: int = 192
    clip_frames: int = 8
    clip_size: int = 112
    patch_size: int = 16
    hidden_size: int = 64
    num_layers: int = 2
    epochs: int = 50  # supervised, on the public vocabulary
    masked_epochs: int = 0  # self-supervised VideoMAE tube masking first (0: none, the shipped checkpoint)
    mask_ratio: float = 0.9  # share of each clip's patches hidden in a masked epoch (VideoMAE's)
    batch_size: int = 32
    learning_rate: float = 2e-3
    fill_share: float = 0.5  # share of training clips shown as a `fill` public view (background = mean colour)
    flip: bool = True  # mirror half the clips each epoch (every action's mirror image is the same action)
    num_proc: int = 2  # rendering processes
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        if self.num_train < self.batch_size or self.num_test < 1:
            raise ValueError(f"need num_train >= batch_size ({self.batch_size}) and num_test >= 1")
        if self.epochs < 0 or self.masked_epochs < 0 or self.epochs + self.masked_epochs == 0:
            raise ValueError(
                f"need epochs, masked_epochs >= 0 and one of them > 0 (got {self.epochs}, {self.masked_epochs})"
            )
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio={self.mask_ratio} must be in (0, 1)")
        if not 0 <= self.fill_share <= 1:
            raise ValueError(f"fill_share={self.fill_share} must be in [0, 1]")
        if self.clip_frames < 2 or self.clip_frames % 2:
            raise ValueError("clip_frames must be even (VideoMAE tubelets are 2 frames)")


def public_corpus_config(config: PretrainConfig):
    """The generator settings of the public corpus: public actions, scenes and people."""
    from hf_maskdp.data.backgrounds import PUBLIC_BACKGROUND_NAMES
    from hf_maskdp.data.build import ActionDatasetConfig

    return ActionDatasetConfig(
        num_frames=config.clip_frames,
        size=config.clip_size,
        vocabulary="public",
        scenes=PUBLIC_BACKGROUND_NAMES,
        background_bias=0.0,
        identity_pool=1,
        num_identities=64,
        person_height=BENCHMARK_PERSON_HEIGHT,
        repetitions=BENCHMARK_REPETITIONS,
        seed=config.seed,
    )


# The framing and speed of the benchmark's clips (issue 12): people fill most of the frame and do
# about one full repetition per clip, so the motion spans many patches.
BENCHMARK_PERSON_HEIGHT = (0.8, 0.95)
BENCHMARK_REPETITIONS = (0.9, 1.1)


def render_corpus(generator_config, num_clips: int, split: str, progress: bool = True, num_proc: int = 1):
    """Frames uint8 (N, T, H, W, 3), person masks bool (N, T, H, W) and labels (N,) of `num_clips`
    clips with balanced labels; `num_proc` processes render interleaved shares of the clips."""
    import numpy as np
    from tqdm.auto import tqdm

    from hf_maskdp.data.build import SPLITS

    classes = len(generator_config.action_names)
    labels = np.random.default_rng([generator_config.seed, SPLITS[split], 7]).permutation(
        np.arange(num_clips) % classes
    )
    jobs = [
        (generator_config, split, [(i, int(labels[i])) for i in range(start, num_clips, num_proc)])
        for start in range(num_proc)
    ]
    if num_proc == 1:
        parts = [_render(jobs[0], progress)]
    else:
        import multiprocessing

        # spawn: the EGL renderer must not be inherited through fork
        with multiprocessing.get_context("spawn").Pool(num_proc) as pool:
            parts = list(
                tqdm(
                    pool.imap(_render, jobs),
                    total=num_proc,
                    desc=f"rendering public {split} clips",
                    disable=not progress,
                )
            )
    clips = {}
    for part in parts:
        clips.update(part)
    frames = np.stack([clips[i][0] for i in range(num_clips)])
    masks = np.stack([clips[i][1] for i in range(num_clips)])
    return frames, masks, labels


def _cached_corpus(corpus, num_clips: int, split: str, config: PretrainConfig):
    """`render_corpus`, kept on disk by configuration: a rebuild with other training settings
    (epochs, learning rate) does not render again."""
    import hashlib
    import os

    import numpy as np

    key = hashlib.sha256(json.dumps([asdict(corpus), num_clips, split], default=str).encode()).hexdigest()[:16]
    root = Path(os.environ.get("HF_MASKDP_CACHE") or Path.home() / ".cache" / "hf_maskdp")
    path = root / "pretrain" / f"{split}-{key}.npz"
    if path.exists():
        cached = np.load(path)
        return cached["frames"], cached["masks"], cached["labels"]
    frames, masks, labels = render_corpus(corpus, num_clips, split, config.progress, config.num_proc)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, frames=frames, masks=masks, labels=labels)
    partial.rename(path)  # complete entries only
    return frames, masks, labels


def _render(job, progress: bool = False) -> dict:
    from tqdm.auto import tqdm

    from hf_maskdp.data.build import ClipGenerator

    generator_config, split, items = job
    generator = ClipGenerator(generator_config)
    out = {}
    for index, label in tqdm(items, desc=f"rendering public {split} clips", disable=not progress):
        clip = generator.clip(split, index, label)
        out[index] = (clip["frames"], clip["person_mask"])
    return out


def to_pixel_values(frames, keep=None):
    """uint8 (N, T, H, W, 3) -> VideoMAE pixel values (N, T, 3, H, W), normalized like
    `VideoClipCollator` (mean = std = 0.5); pixels where `keep` is False become the mean colour."""
    import torch

    x = torch.as_tensor(frames).float() / 255.0
    if keep is not None:
        x = torch.where(torch.as_tensor(keep)[..., None], x, torch.full_like(x, 0.5))
    return ((x - 0.5) / 0.5).permute(0, 1, 4, 2, 3).contiguous()


def build_classifier(config: PretrainConfig, labels: tuple[str, ...]):
    """The VideoMAE classifier of `config`'s shape (`hf_maskdp.training.model`), seeded by `config.seed`."""
    import torch

    from hf_maskdp.training.model import videomae_classifier

    torch.manual_seed(config.seed)
    return videomae_classifier(
        labels,
        image_size=config.clip_size,
        num_frames=config.clip_frames,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        patch_size=config.patch_size,
    )


def pretrain(config: PretrainConfig | None = None) -> dict:
    """Render the public corpus, train, evaluate on its own test clips, `save_pretrained` with a card.
    Returns the metrics (also in `pretraining.json` next to the weights)."""
    import torch

    config = config or PretrainConfig()
    started = time.perf_counter()
    corpus = public_corpus_config(config)
    train_frames, train_masks, train_labels = _cached_corpus(corpus, config.num_train, "train", config)
    test_frames, test_masks, test_labels = _cached_corpus(corpus, config.num_test, "test", config)

    generator = torch.Generator().manual_seed(config.seed)
    # the person's pixels are kept in every clip; a `fill_share` of clips lose their background
    filled = torch.rand(len(train_labels), generator=generator) < config.fill_share
    keep = torch.as_tensor(train_masks) | ~filled.view(-1, 1, 1, 1)
    x_train, y_train = to_pixel_values(train_frames, keep), torch.as_tensor(train_labels)

    model = build_classifier(config, corpus.action_names)
    if config.masked_epochs:
        masked = masked_video_model(model.config)
        _fit(masked, x_train, None, config.masked_epochs, config, generator, "self-supervised (tube masking)")
        model.videomae.load_state_dict(masked.videomae.state_dict())  # the encoder; the head stays fresh
    if config.epochs:
        _fit(model, x_train, y_train, config.epochs, config, generator, "supervised")

    metrics = {
        "test_accuracy_full_clips": accuracy(model, to_pixel_values(test_frames), test_labels),
        "test_accuracy_fill_view": accuracy(model, to_pixel_values(test_frames, test_masks), test_labels),
        "train_accuracy": accuracy(model, x_train, y_train),
        "chance": 1 / len(corpus.action_names),
        "seconds": round(time.perf_counter() - started, 1),
    }
    output = Path(config.output_dir)
    model.save_pretrained(output)
    (output / "pretraining.json").write_text(json.dumps({"config": asdict(config), "metrics": metrics}, indent=2))
    (output / "README.md").write_text(_card(config, corpus, metrics))
    return metrics


def masked_video_model(classifier_config):
    """A `VideoMAEForPreTraining` with the classifier's encoder shape and a one-layer decoder of the
    same width (VideoMAE's default decoder, 384 wide and 4 deep, would dwarf a small encoder)."""
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    fields = classifier_config.to_dict()
    for name in ("id2label", "label2id", "architectures", "problem_type"):
        fields.pop(name, None)
    decoder = dict(
        decoder_hidden_size=fields["hidden_size"],
        decoder_intermediate_size=fields["intermediate_size"],
        decoder_num_attention_heads=fields["num_attention_heads"],
        decoder_num_hidden_layers=1,
    )
    return VideoMAEForPreTraining(VideoMAEConfig(**{**fields, **decoder}))


def tube_mask(batch: int, config, ratio: float, generator):
    """VideoMAE's tube masking: each clip hides the same `ratio` of its spatial patches in every
    tubelet. Bool (batch, tokens), True = hidden; every clip hides the same number (the model needs it)."""
    import torch

    patches = (config.image_size // config.patch_size) ** 2
    hidden = int(round(ratio * patches))
    order = torch.rand(batch, patches, generator=generator).argsort(dim=1)
    spatial = torch.zeros(batch, patches, dtype=torch.bool)
    spatial.scatter_(1, order[:, :hidden], True)
    return spatial.repeat(1, config.num_frames // config.tubelet_size)


def _fit(model, x_train, y_train, epochs: int, config: PretrainConfig, generator, what: str) -> None:
    """AdamW with a one-cycle schedule; mirrored clips; labels, or tube masks when `y_train` is None."""
    import torch
    from tqdm.auto import trange

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.05)
    steps_per_epoch = -(-len(x_train) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=epochs * steps_per_epoch, pct_start=0.1
    )
    model.train()
    for _ in trange(epochs, desc=f"pretraining on public clips, {what}", disable=not config.progress):
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            pixels = x_train[batch]
            if config.flip:
                mirrored = torch.rand(len(batch), generator=generator) < 0.5
                pixels = torch.where(mirrored.view(-1, 1, 1, 1, 1), pixels.flip(-1), pixels)
            if y_train is None:
                hidden = tube_mask(len(batch), model.config, config.mask_ratio, generator)
                loss = model(pixel_values=pixels, bool_masked_pos=hidden).loss
            else:
                loss = model(pixel_values=pixels, labels=y_train[batch]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()


def accuracy(model, pixel_values, labels, batch_size: int = 64) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        predictions = torch.cat(
            [
                model(pixel_values=pixel_values[i : i + batch_size]).logits.argmax(-1)
                for i in range(0, len(pixel_values), batch_size)
            ]
        )
    model.train()
    return float((predictions == torch.as_tensor(labels)).float().mean())


def load_pretrained_backbone(model_id_or_path, labels: tuple[str, ...], seed: int = 0):
    """`from_pretrained` a VideoMAE classifier for `labels`, with a freshly initialized head.

    The pretrained head scores the public vocabulary; the private actions are other classes, so
    the head is re-drawn (seeded) even when the number of classes happens to match."""
    import torch
    from transformers import VideoMAEForVideoClassification

    model = VideoMAEForVideoClassification.from_pretrained(
        model_id_or_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        ignore_mismatched_sizes=True,
    )
    torch.manual_seed(seed)
    model.classifier.reset_parameters()
    return model.train()  # from_pretrained returns eval mode; per-sample gradients need training mode


def _card(config: PretrainConfig, corpus, metrics: dict) -> str:
    return f"""---
library_name: transformers
pipeline_tag: video-classification
tags: [videomae, hf-maskdp, public-pretraining]
---

# VideoMAE pretrained on public avatar clips (hf_maskdp)

A small VideoMAE ({config.num_layers} layers, hidden {config.hidden_size}, {config.clip_size} px, patch
{config.patch_size}, {config.clip_frames} frames) trained on **public data only** ({_objective(config)}), as the
initialization that `hf-maskdp quickstart` fine-tunes with MaskDP. It costs no privacy budget: it has
never seen a private clip.

## Data it saw

{config.num_train} rendered clips (`hf_maskdp.data`, seed {config.seed}): avatars of identity pool
{corpus.identity_pool} (disjoint from the private data's pool 0) performing the public vocabulary
{list(corpus.action_names)} (disjoint from the private actions) in front of the public scenes
{list(corpus.scenes)} (photos no private clip uses). {config.fill_share:.0%} of the training clips had their
background replaced by the mean colour, as MaskDP's `fill` public view shows avatars.

## Its own test accuracy ({config.num_test} held-out public clips, chance {metrics["chance"]:.3f})

- full clips: {metrics["test_accuracy_full_clips"]:.3f}
- `fill` view (background replaced): {metrics["test_accuracy_fill_view"]:.3f}
- training accuracy: {metrics["train_accuracy"]:.3f}

Trained {_objective(config)}, AdamW lr {config.learning_rate:g} (one-cycle), batch {config.batch_size};
{metrics["seconds"] / 60:.1f} min on CPU.

## Rebuild

```bash
hf-maskdp pretrain {config.output_dir}
```
"""


def _objective(config: PretrainConfig) -> str:
    parts = []
    if config.masked_epochs:
        parts.append(f"{config.masked_epochs} self-supervised epochs of tube masking, mask ratio {config.mask_ratio:g}")
    if config.epochs:
        parts.append(f"{config.epochs} supervised epochs on the public vocabulary")
    text = ", then ".join(parts)
    return text if config.epochs else text + "; the classification head is untrained, its accuracy is chance"


def shipped_checkpoint() -> str:
    """The public checkpoint that ships in the package (rebuild: `hf-maskdp pretrain`)."""
    if not (SHIPPED_CHECKPOINT / "config.json").exists():
        raise FileNotFoundError(
            f"no pretrained checkpoint at {SHIPPED_CHECKPOINT}; rebuild it with "
            f"`hf-maskdp pretrain {SHIPPED_CHECKPOINT}` or pass pretrained_model= (a Hub id or folder)"
        )
    return str(SHIPPED_CHECKPOINT)
