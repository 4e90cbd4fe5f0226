"""The empirical privacy audit of `MaskDPTrainer`: many short runs on two adjacent datasets.

`audit_training` runs the real trainer (Poisson sampler, per-sample clipping, noise, public view)
and two deliberately broken variants, and turns the runs' scores into a lower bound on ε with the
statistics of `hf_maskdp.privacy.audit` (docs/privacy.md, "Empirical audit"). The variants use the
trainer's audit hooks (`_audit_private_indices`, `_audit_noise_multiplier`) and the collator's
`public_batch`, never its private methods.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass

import numpy as np

from ..privacy.audit import AuditResult, epsilon_lower_bound

VARIANTS = ("correct", "no_noise", "public_reads_sensitive")


@dataclass
class TrainingAudit:
    variant: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon_rdp: float  # what the accountant states for one run of `steps` steps
    epsilon_pld: float  # the tightest accountant: a lower bound above this is a bug
    result: AuditResult


def audit_training(
    noise_multiplier: float,
    private_records: int = 2,
    steps: int = 1,
    runs: int = 200,
    variant: str = "correct",
    delta: float = 1e-5,
    confidence: float = 0.95,
    seed: int = 0,
) -> TrainingAudit:
    """Audit `MaskDPTrainer` on a tiny VideoMAE: `runs` runs of `steps` steps on D and on D'.

    D: `private_records` clips with a sensitive left half (the first is the canary, its
    sensitive half white), plus 2 fully public clips; q = 1 / private_records. D': the same,
    but the canary's sensitive content is ⊥: its sensitive pixels are replaced (black), and
    the private branch skips it (docs/privacy.md: ⊥ contributes zero). Labels, masks and public
    pixels are identical.

    One run = `steps` optimizer steps of the real trainer from the same initial weights θ0
    (a callback records the output and resets θ ← θ0; the samplers and the noise generator
    run on, so runs are independent). Score: the update's projection on the part of the
    canary's gradient at θ0 orthogonal to the other private records' gradients, so the
    other records cannot blur the canary's signal and the audit is close to tight.

    Variants: "correct"; "no_noise" (the noise is switched off, a bug); and
    "public_reads_sensitive" (a collator whose public view is the full clip, a bug).
    """
    import torch
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging as transformers_logging

    from ..privacy.accounting import compute_epsilon
    from .config import MaskDPConfig

    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} is unknown: must be one of {', '.join(VARIANTS)}")
    if private_records < 1:
        raise ValueError(f"private_records={private_records!r} must be >= 1 (the sample rate is 1 / private_records)")
    sample_rate = 1 / private_records
    clip_norm, learning_rate = 1e-3, 1e-2  # tiny C: a public-branch leak dwarfs the noise
    dataset_in, dataset_out = _canary_datasets(private_records, seed)
    collator = _collator(leaky=variant == "public_reads_sensitive")
    theta0 = _tiny_video_classifier(seed).state_dict()
    direction = _canary_direction(theta0, dataset_in, private_records, collator, seed)

    def run(dataset, canary_absent: bool, dp_seed: int) -> np.ndarray:
        scores = []

        class RecordAndReset(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kwargs):
                if state.global_step % steps == 0:
                    with torch.no_grad():
                        update = torch.cat([(p0 - p).flatten() for p0, p in zip(initial, model.parameters())])
                        scores.append(float(update @ direction) / learning_rate)
                        for p0, p in zip(initial, model.parameters()):
                            p.copy_(p0)
                return control

        model = _tiny_video_classifier(seed)
        initial = [p.detach().clone() for p in model.parameters()]
        with tempfile.TemporaryDirectory() as tmp:
            config = MaskDPConfig(
                output_dir=tmp,
                privacy_mode="maskdp",
                public_view="fill",
                noise_multiplier=noise_multiplier,
                per_sample_clip_norm=clip_norm,
                private_batch_size=1,
                public_batch_size=len(dataset),
                per_device_train_batch_size=len(dataset),
                max_steps=steps * runs,
                dp_seed=dp_seed,
                learning_rate=learning_rate,
                optim="sgd",
                lr_scheduler_type="constant",
                warmup_steps=0,
                weight_decay=0.0,
                report_to="none",
                save_strategy="no",
                use_cpu=True,
                logging_steps=10**9,
                disable_tqdm=True,
                trust_masks=True,  # the canary's masks are made here, not by the anonymizer
            )
            trainer = _audit_trainer_class()(
                model=model, args=config, data_collator=collator, train_dataset=dataset, callbacks=[RecordAndReset()]
            )
            trainer.remove_callback(PrinterCallback)  # no per-run log lines
            trainer.canary_absent = canary_absent
            trainer.noise_off = variant == "no_noise"
            trainer.train()
        return np.asarray(scores)

    # The trainer rightly warns that a fixed dp_seed voids the guarantee; here seeds make the
    # audit reproducible, and each run draws its own stream.
    trainer_logger = logging.getLogger("hf_maskdp.training.trainer")
    verbosity, level = transformers_logging.get_verbosity(), trainer_logger.level
    transformers_logging.set_verbosity_error()
    trainer_logger.setLevel(logging.ERROR)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only add synchronization
    try:
        scores_in = run(dataset_in, canary_absent=False, dp_seed=2 * seed)
        scores_out = run(dataset_out, canary_absent=True, dp_seed=2 * seed + 1)
    finally:
        transformers_logging.set_verbosity(verbosity)
        trainer_logger.setLevel(level)
        torch.set_num_threads(threads)
    result = epsilon_lower_bound(scores_in, scores_out, delta, confidence, seed)
    return TrainingAudit(
        variant,
        noise_multiplier,
        sample_rate,
        steps,
        compute_epsilon(sample_rate, noise_multiplier, steps, delta, "rdp"),
        compute_epsilon(sample_rate, noise_multiplier, steps, delta, "pld"),
        result,
    )


CANARY = 0
_SHAPE = (4, 16, 16)  # frames, height, width: the tiny model's input, no resizing


def _canary_datasets(private_records: int, seed: int) -> tuple[list[dict], list[dict]]:
    from ..video import encode_mask

    rng = np.random.default_rng(seed)
    half = np.zeros(_SHAPE, bool)
    half[:, :, : _SHAPE[2] // 2] = True
    rows = []
    for i in range(private_records + 2):
        video = rng.integers(0, 256, (*_SHAPE, 3), dtype=np.uint8)
        mask = half if i < private_records else np.zeros(_SHAPE, bool)
        rows.append({"video": video, "sensitive_mask": encode_mask(mask), "label": i % 3})
    rows[CANARY]["video"][half] = 255
    absent = [dict(row) for row in rows]
    absent[CANARY] = {**rows[CANARY], "video": np.where(half[..., None], 0, rows[CANARY]["video"]).astype(np.uint8)}
    return rows, absent


def _collator(leaky: bool):
    import torch

    from .collator import VideoClipCollator

    class LeakyCollator(VideoClipCollator):
        def public_batch(self, examples):
            # BUG on purpose: the "public" view is the full clip, and claims to be all public.
            batch = self(examples)
            batch["sensitive_mask"] = torch.zeros_like(batch["sensitive_mask"])
            return batch

    cls = LeakyCollator if leaky else VideoClipCollator
    return cls(num_frames=_SHAPE[0], image_size=_SHAPE[1])


def _tiny_video_classifier(seed: int):
    import torch
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    torch.manual_seed(seed)
    config = VideoMAEConfig(
        image_size=_SHAPE[1],
        patch_size=8,
        num_frames=_SHAPE[0],
        tubelet_size=2,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    return VideoMAEForVideoClassification(config)


def _canary_direction(state_dict, rows, private_records, collator, seed):
    """Unit vector: the canary's gradient at θ0 minus its projection on the others' gradients."""
    import torch
    import torch.nn.functional as F

    model = _tiny_video_classifier(seed)
    model.load_state_dict(state_dict)
    grads = []
    for row in rows[:private_records]:
        batch = collator([row])
        model.zero_grad()
        F.cross_entropy(model(pixel_values=batch["pixel_values"]).logits, batch["labels"], reduction="sum").backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]).double())
    direction = grads[CANARY]
    if private_records > 1:
        basis, _ = torch.linalg.qr(torch.stack(grads[1:], dim=1))
        direction = direction - basis @ (basis.T @ direction)
    return (direction / direction.norm()).float()


def _audit_trainer_class():
    from .trainer import MaskDPTrainer

    class AuditTrainer(MaskDPTrainer):
        """The real trainer; on D' the canary's sensitive content is ⊥, which contributes zero."""

        canary_absent = False
        noise_off = False  # the "no_noise" bug: no noise is drawn while the accountant still believes σ

        def _audit_private_indices(self, indices):
            return [i for i in indices if i != CANARY] if self.canary_absent else indices

        def _audit_noise_multiplier(self):
            return 0.0 if self.noise_off else self.noise_multiplier

    return AuditTrainer
