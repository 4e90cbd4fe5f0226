"""The small VideoMAE classifier this package builds from a config (the CLI, pretraining, the quickstart).

One rule for its shape, so a model built here matches the shipped public checkpoint: attention heads of
32 dimensions, an MLP 4x the hidden size, tubelets of 2 frames.
"""

from __future__ import annotations


def videomae_classifier(
    labels, *, image_size: int, num_frames: int, hidden_size: int, num_layers: int, patch_size: int = 16
):
    """A randomly initialized `VideoMAEForVideoClassification`; `labels` is the class names or their number.

    Seed torch before calling it for reproducible weights."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    names = None if isinstance(labels, int) else list(labels)
    label_fields = {"num_labels": labels if names is None else len(names)}
    if names is not None:
        label_fields.update(id2label=dict(enumerate(names)), label2id={name: i for i, name in enumerate(names)})
    config = VideoMAEConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_frames=num_frames,
        tubelet_size=2,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 32),
        intermediate_size=4 * hidden_size,
        **label_fields,
    )
    return VideoMAEForVideoClassification(config)
