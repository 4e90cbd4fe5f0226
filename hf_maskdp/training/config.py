"""`MaskDPConfig`: `TrainingArguments` plus the privacy settings of a MaskDP run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..constants import ACCOUNTANTS, DEFAULT_ACCOUNTANT, PRIVACY_MODES, PRIVATE_MODES, PUBLIC_BRANCH_MODES, PUBLIC_VIEWS

# Provisional: `fill` works for any video model and keeps partly public tokens, while `drop`
# (VideoMAE only) loses every token that touches a sensitive pixel, and thin avatars leave few
# whole tokens. To be confirmed (or flipped, here only) by the utility measured on the embedded
# benchmark.
DEFAULT_PUBLIC_VIEW = "fill"


@dataclass
class MaskDPConfig(TrainingArguments):
    """Training arguments for `MaskDPTrainer`.

    Batch sizes: `private_batch_size` is the *expected* Poisson batch over all processes
    (q = private_batch_size / number of records with sensitive content); `public_batch_size`
    is the public batch over all processes; `per_device_train_batch_size` is only the
    micro-batch that fits in memory (a logical batch is split into micro-batches and the noise
    is added once per logical step). `gradient_accumulation_steps` must stay 1.
    """

    privacy_mode: str = field(
        default="maskdp",
        metadata={
            "help": "'maskdp' (private full clips + public views), 'dpsgd' (DP-SGD on whole clips), "
            "'public_only' (public views only, epsilon = 0) or 'none' (non-private)."
        },
    )
    target_epsilon: float | None = field(
        default=None, metadata={"help": "Epsilon to spend over the planned steps; sigma is calibrated to it."}
    )
    noise_multiplier: float | None = field(
        default=None, metadata={"help": "Noise std / clip norm (sigma); give this or target_epsilon, not both."}
    )
    target_delta: float = field(default=1e-5, metadata={"help": "Delta of (epsilon, delta); well below 1/N."})
    per_sample_clip_norm: float = field(default=1.0, metadata={"help": "C: each example's gradient norm bound."})
    private_batch_size: int = field(default=32, metadata={"help": "Expected Poisson batch size (all processes)."})
    public_batch_size: int = field(default=8, metadata={"help": "Public-branch batch size (all processes)."})
    public_view: str = field(
        default=DEFAULT_PUBLIC_VIEW,
        metadata={
            "help": "'fill' (sensitive pixels set to the mean colour; any model) or 'drop' (only "
            "tokens whose whole tubelet is public; VideoMAE)."
        },
    )
    private_grad_weight: float = field(default=1.0, metadata={"help": "lambda_priv in the update."})
    public_grad_weight: float = field(default=1.0, metadata={"help": "lambda_pub in the update."})
    branch_adam: bool = field(
        default=False,
        metadata={
            "help": "maskdp only: Adam moments per branch (adam_beta1/2, adam_epsilon), one set on the noisy "
            "G_priv and one on G_pub; the update lambda_priv dir_priv + lambda_pub dir_pub is stepped by "
            "optim='sgd' without momentum at learning_rate. One Adam over the sum lets the noise set the "
            "per-coordinate scale of the public gradient too."
        },
    )
    accountant: str = field(default=DEFAULT_ACCOUNTANT, metadata={"help": "'rdp' (default), 'prv' or 'pld'."})
    mask_column: str = field(default="sensitive_mask", metadata={"help": "Dataset column with the mask."})
    trust_masks: bool = field(
        default=False,
        metadata={
            "help": "DANGER: use masks that carry no anonymizer provenance, on your word that they are right "
            "(maskdp/public_only). MaskDP protects only what the mask marks sensitive; the model card "
            "states the override. See docs/privacy.md."
        },
    )
    stop_at_epsilon: float | None = field(
        default=None, metadata={"help": "Stop before a step would make epsilon exceed this budget."}
    )
    dp_seed: int | None = field(
        default=None,
        metadata={
            "help": "Seed of the Poisson draws, public shuffles and noise. Leave None (OS entropy): "
            "anyone who knows it can undo the noise. Fix it only for tests."
        },
    )
    # Overridden TrainingArguments defaults: the DP clip replaces max_grad_norm, the collator needs
    # the video and mask columns, and models trained on private data go to private repos.
    max_grad_norm: float = field(default=0.0, metadata={"help": "Must stay 0 for DP modes."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep video/mask columns."})
    hub_private_repo: bool | None = field(default=True, metadata={"help": "Push to a private repo."})

    def __post_init__(self):
        self._refuse_unsupported_features()  # first: TrainingArguments would start setting some of them up
        super().__post_init__()
        if self.privacy_mode not in PRIVACY_MODES:
            raise ValueError(f"privacy_mode={self.privacy_mode!r}: choose one of {PRIVACY_MODES}")
        if self.public_view not in PUBLIC_VIEWS:
            raise ValueError(f"public_view={self.public_view!r}: choose one of {PUBLIC_VIEWS}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant={self.accountant!r}: choose one of {ACCOUNTANTS}")
        if self.gradient_accumulation_steps != 1:
            raise ValueError(
                "gradient_accumulation_steps must be 1: MaskDPTrainer accumulates micro-batches itself. "
                "Set private_batch_size (logical batch) and per_device_train_batch_size (micro-batch) instead"
            )
        for name in ("private_batch_size", "public_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 1")
        if self.is_private:
            given = [n for n in ("target_epsilon", "noise_multiplier") if getattr(self, n) is not None]
            if len(given) != 1:
                raise ValueError(
                    f"privacy_mode={self.privacy_mode!r} needs exactly one of target_epsilon or noise_multiplier "
                    f"(got {given or 'neither'}): target_epsilon calibrates sigma, noise_multiplier fixes it"
                )
            if self.target_epsilon is not None and not 0 < self.target_epsilon < math.inf:
                raise ValueError(f"target_epsilon={self.target_epsilon!r} must be > 0 and finite")
            if self.noise_multiplier is not None and not 0 < self.noise_multiplier < math.inf:
                raise ValueError(f"noise_multiplier={self.noise_multiplier!r} must be > 0 (0 is no privacy) and finite")
            if not 0 < self.target_delta < 0.5:
                raise ValueError(
                    f"target_delta={self.target_delta!r} must be in (0, 0.5): δ is the probability that the "
                    "guarantee fails outright, choose it well below 1 / number of training records (e.g. 1e-5)"
                )
            if not self.per_sample_clip_norm > 0:
                raise ValueError(f"per_sample_clip_norm={self.per_sample_clip_norm!r} must be > 0")
            if self.max_grad_norm and self.max_grad_norm > 0:
                raise ValueError(
                    f"max_grad_norm={self.max_grad_norm} would clip the noisy update with a data-dependent "
                    "factor; DP runs need max_grad_norm=0 (per_sample_clip_norm is the DP clip)"
                )
        if self.branch_adam:
            self._check_branch_adam()
        if self.stop_at_epsilon is not None and not self.stop_at_epsilon > 0:
            raise ValueError(f"stop_at_epsilon={self.stop_at_epsilon!r} must be > 0")
        if self.stop_at_epsilon is not None and not self.is_private:
            raise ValueError(
                f"stop_at_epsilon is for the private modes; privacy_mode={self.privacy_mode!r} "
                "spends no budget to stop at"
            )

    def _check_branch_adam(self) -> None:
        if self.privacy_mode != "maskdp":
            raise ValueError(
                f"branch_adam=True needs two branches (privacy_mode='maskdp'), not {self.privacy_mode!r}: with "
                "one branch it is plain Adam, use optim='adamw_torch' (for dpsgd that is DP-Adam on the noisy update)"
            )
        if self.optim != "sgd":
            raise ValueError(
                f"branch_adam=True preconditions each branch itself and needs optim='sgd' (without momentum) to "
                f"step the result; optim={getattr(self.optim, 'value', self.optim)!r} would precondition it a second time"
            )

    def _refuse_unsupported_features(self) -> None:
        """TrainingArguments features that MaskDPTrainer would otherwise ignore or that would void
        the accounting: refused here, each with what to use instead (bf16, label_smoothing_factor and
        dataloader_num_workers are supported)."""
        refused = {
            "auto_find_batch_size": "it restarts the loop with a fresh state and a re-calibrated sigma after noisy "
            "updates were applied, so epsilon would be under-reported; set per_device_train_batch_size (the "
            "micro-batch: memory only, it does not change the privacy of a step)",
            "deepspeed": "it shards the model, so per-example gradients cannot be clipped; launch plain "
            "data-parallel processes (accelerate launch --multi_gpu)",
            "fsdp": "it shards the model, so per-example gradients cannot be clipped; launch plain data-parallel "
            "processes (accelerate launch --multi_gpu)",
            "torch_compile": "the per-example gradient hooks run the model eagerly; leave torch_compile=False",
            "torch_compile_backend": "it turns on torch_compile, and the per-example gradient hooks run the model "
            "eagerly; leave it unset",
            "torch_compile_mode": "it turns on torch_compile, and the per-example gradient hooks run the model "
            "eagerly; leave it unset",
            "activation_checkpointing": "the recomputed forward would record every layer's activations twice for "
            "the per-example gradients; lower per_device_train_batch_size (the micro-batch) to save memory",
            "gradient_checkpointing": "the recomputed forward would record every layer's activations twice for "
            "the per-example gradients; lower per_device_train_batch_size (the micro-batch) to save memory",
            "fp16": "fp16 needs loss scaling, which would scale the clipped, noised gradient by a data-dependent "
            "factor; use bf16=True (autocast; per-example norms and the clipped sum stay fp32)",
        }
        for name, why in refused.items():
            if getattr(self, name, None):
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported by MaskDPTrainer: {why}")

    @property
    def is_private(self) -> bool:
        """True for the modes with a private (noisy) branch."""
        return self.privacy_mode in PRIVATE_MODES

    @property
    def uses_public_branch(self) -> bool:
        return self.privacy_mode in PUBLIC_BRANCH_MODES
