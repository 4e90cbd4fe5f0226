"""`MaskDPTrainer`: a `transformers.Trainer` that fine-tunes a video classifier under MaskDP.

One optimizer step (docs/privacy.md, "One training step") is one item of the train loader:
`{"private": [indices], "public": [indices]}` drawn in the main process by the samplers in
`hf_maskdp.privacy`, plus those rows' collated micro-batches, which DataLoader workers decode
(`dataloader_num_workers`). `training_step` turns it into `p.grad = lambda_priv G_priv +
lambda_pub G_pub`; the stock loop then runs the optimizer, scheduler, callbacks, logging and
checkpoints. Each checkpoint also holds the privacy state that `resume_from_checkpoint` restores.

The Trainer owns its data loader, model wrapping and loss reduction, because the stock ones
break DP (measured with transformers 5): it re-samples and re-shards batches, rescales the loss by
a data-dependent count, wraps the model in DDP (a second, wasted all-reduce), and logs the raw
gradient norm. Logs carry only privatized quantities: epsilon, the public-branch loss.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from itertools import repeat

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from transformers.utils import logging

from ..constants import PRIVACY_RECORD_FILE
from ..privacy import mechanism
from ..privacy.mask_checks import check_masks
from ..privacy.masks import has_public_content, token_mask
from ..privacy.record import PrivacyRecord
from ..privacy.sampling import PoissonBatchSampler, ShuffledBatchSampler, make_generator, shard
from .collator import check_labels
from .config import MaskDPConfig

PRIVACY_STATE_NAME = "maskdp_state.json"  # in every checkpoint: what a resumed run must continue
BRANCH_ADAM_NAME = "maskdp_branch_adam.pt"  # in every checkpoint of a branch_adam run: the branches' moments
# The settings a resumed run must share with its checkpoint: they fix q, sigma and the mechanism.
PRIVACY_CONFIG_FIELDS = (
    "privacy_mode",
    "target_epsilon",
    "noise_multiplier",
    "target_delta",
    "per_sample_clip_norm",
    "private_batch_size",
    "public_batch_size",
    "public_view",
    "accountant",
    "mask_column",
    "private_grad_weight",
    "public_grad_weight",
    "world_size",
)
logger = logging.get_logger(__name__)


class MaskDPTrainer(Trainer):
    """Trainer for `privacy_mode` "maskdp", "dpsgd", "public_only" or "none" (see `MaskDPConfig`).

    `data_collator` must map rows to `pixel_values` and `labels` (a `VideoClipCollator`); the
    public branch also calls its `public_batch(rows)`, whose output may depend only on `m = 0`
    pixels. Evaluate on held-out data: metrics on the private training set are not private.
    """

    def __init__(
        self,
        model=None,
        args: MaskDPConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        **kwargs,
    ):
        if not isinstance(args, MaskDPConfig):
            raise ValueError("MaskDPTrainer needs args=MaskDPConfig(...) (TrainingArguments has no privacy settings)")
        if data_collator is None:
            raise ValueError("pass data_collator=VideoClipCollator(image_processor, num_frames=...)")
        if args.uses_public_branch and not hasattr(data_collator, "public_batch"):
            raise ValueError(
                f"privacy_mode={args.privacy_mode!r} needs a collator with public_batch(rows) "
                "(VideoClipCollator) to build public views"
            )
        self._refuse_custom_losses(kwargs.get("compute_loss_func"))
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            **kwargs,
        )
        self._refuse_sharding()
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched != self.args.world_size:
            raise ValueError(
                f"{launched} processes were launched but the Trainer sees world_size={self.args.world_size}: "
                "each process would add the full noise for a fraction of the data. On CPU use torchrun or "
                "`accelerate launch --multi_gpu --num_processes N` with MaskDPConfig(use_cpu=True)"
            )
        if args.uses_public_branch and args.public_view == "drop" and not hasattr(self.model.config, "tubelet_size"):
            raise ValueError("public_view='drop' needs a VideoMAE-style token model; use public_view='fill'")
        self._per_sample = None
        if args.is_private:
            mechanism.check_model_supported(self.model)
            self._per_sample = mechanism.attach_per_sample_grads(self.model)
        self.sample_rate: float | None = None  # q, set when the run is planned (`_plan`)
        self.noise_multiplier: float | None = args.noise_multiplier
        self.planned_steps: int | None = None
        self._private_indices: list[int] | None = None
        self._private_records = 0
        self._resumed: dict | None = None  # the privacy state of the checkpoint this run resumes
        self._mask_check = None  # what check_masks found on the train dataset (set before training)
        self.branch_adam = BranchAdam(args.adam_beta1, args.adam_beta2, args.adam_epsilon) if args.branch_adam else None
        self.add_callback(_EpsilonBudget(self))
        if args.is_private and args.dp_seed is not None:
            logger.warning(
                "dp_seed is set: whoever knows it can recompute the noise and the Poisson draws, "
                "which voids the guarantee. Leave dp_seed=None outside tests."
            )
        if args.uses_public_branch and args.trust_masks:
            logger.warning(
                "trust_masks=True: masks without the anonymizer's provenance are used on your word. MaskDP "
                "protects only what they mark sensitive; the privacy record and model card say so."
            )

    # ------------------------------------------------------------------ refused Trainer features
    # (the TrainingArguments ones are refused in MaskDPConfig._refuse_unsupported_features)

    def _refuse_custom_losses(self, compute_loss_func) -> None:
        if compute_loss_func is not None:
            raise ValueError(
                "compute_loss_func is not supported: the private branch needs a sum of per-example losses, which "
                "MaskDPTrainer computes itself (cross-entropy; set label_smoothing_factor for smoothing)"
            )
        if type(self).compute_loss is not Trainer.compute_loss:
            raise ValueError(
                f"{type(self).__name__} overrides compute_loss, which MaskDPTrainer never calls for training (the "
                "private branch needs per-example losses); override _loss_sum(pixel_values, labels) instead"
            )

    def _refuse_sharding(self) -> None:
        """DeepSpeed or FSDP set up by the launcher (accelerate's config), not only by the arguments."""
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError(
                "DeepSpeed and FSDP shard the model, so per-example gradients cannot be computed and clipped; "
                "launch plain data-parallel processes (`accelerate launch --multi_gpu`) instead"
            )

    # ------------------------------------------------------------------ privacy accounting

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        """`Trainer.train`, once: the accountant counts the steps of one run. A second call would
        restart the step count and re-calibrate σ, so the reported ε would cover only that call.

        `resume_from_checkpoint` continues a run: the checkpoint's privacy state (steps, q, σ,
        planned steps, record counts) is restored and its privacy configuration must match this
        one, checked before any weights are loaded."""
        if self.args.is_private and self.state.global_step > 0:
            raise ValueError(
                f"this MaskDPTrainer already trained {self.state.global_step} private steps "
                f"(epsilon={self.privacy_spent()[0]:.4g}); a second train() would be accounted as a fresh run. "
                "Plan all steps in one train() call (num_train_epochs / max_steps), or resume from a checkpoint "
                "with a new trainer"
            )
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"no checkpoint found in {self.args.output_dir} to resume from")
        if resume_from_checkpoint:
            self._resumed = read_privacy_state(resume_from_checkpoint)
            self._check_resumable(self._resumed)
            self._check_branch_moments(resume_from_checkpoint)
        self._plan()
        return super().train(resume_from_checkpoint or None, *args, **kwargs)

    def privacy_spent(self, steps: int | None = None) -> tuple[float, float]:
        """(epsilon, delta) spent after `steps` optimizer steps (default: the steps taken)."""
        from ..privacy.accounting import compute_epsilon

        args = self.args
        if args.privacy_mode == "none":
            return math.inf, 1.0
        steps = self.state.global_step if steps is None else steps
        if not args.is_private or not self._private_records or steps == 0 or self.sample_rate is None:
            return 0.0, 0.0  # the private branch is empty: nothing sensitive is ever read
        eps = compute_epsilon(
            self.sample_rate, self.noise_multiplier, steps=steps, delta=args.target_delta, accountant=args.accountant
        )
        return eps, args.target_delta

    def privacy_record(self) -> dict:
        """What the run guarantees: a `PrivacyRecord`, as a dict (`maskdp_privacy.json`, `model.config.maskdp`)."""
        args = self.args
        eps, delta = self.privacy_spent()
        steps = self.state.global_step
        return PrivacyRecord(
            privacy_mode=args.privacy_mode,
            epsilon=None if args.privacy_mode == "none" else eps,
            delta=None if args.privacy_mode == "none" else delta,
            accountant=args.accountant if args.is_private else None,
            noise_multiplier=self.noise_multiplier if args.is_private else None,
            per_sample_clip_norm=args.per_sample_clip_norm if args.is_private else None,
            sample_rate=self.sample_rate,
            steps=steps,
            epochs=steps * self.sample_rate if self.sample_rate else self.state.epoch,
            public_view=args.public_view if args.uses_public_branch else None,
            mask_column=args.mask_column if args.privacy_mode != "none" else None,
            # q = private_batch_size / private_records: the records with sensitive content (maskdp) or all
            # rows (dpsgd); training_rows also counts the rows without any, which feed only the public branch.
            training_rows=len(self.train_dataset) if self.train_dataset is not None else None,
            private_records=self._private_records if args.is_private else None,
            world_size=args.world_size,
            trust_masks=args.trust_masks if args.uses_public_branch else None,
            fully_public_records=len(self._mask_check.fully_public) if self._mask_check is not None else None,
        ).to_dict()

    # ------------------------------------------------------------------ data

    def _plan(self) -> None:
        """Fix the run before the first step: the private records, q, sigma (calibrated to the
        planned steps) and the planned steps, or the ones of the checkpoint being resumed."""
        from ..privacy.accounting import calibrate_noise_multiplier, compute_epsilon, delta_warning, steps_for_epochs

        if self.planned_steps is not None:
            return
        args, dataset = self.args, self.train_dataset
        if dataset is None:
            raise ValueError("MaskDPTrainer needs a train_dataset")
        self._check_dataset(dataset)
        num_records = len(dataset)
        if args.privacy_mode == "maskdp":
            private = self._records_with_sensitive_content(dataset)
        elif args.privacy_mode == "dpsgd":
            private = list(range(num_records))
        else:
            private = []
        self._private_indices, self._private_records = private, len(private)
        warning = delta_warning(args.target_delta, len(private)) if args.is_private else None
        if warning:
            logger.warning(warning)

        if private:
            rate = args.private_batch_size / len(private)
            if rate > 1:
                raise ValueError(
                    f"private_batch_size={args.private_batch_size} exceeds the {len(private)} records with "
                    "sensitive content: Poisson sampling needs q = batch / records <= 1; lower private_batch_size"
                )
            self.sample_rate = rate
        else:  # no accountant: the same definition of an epoch, on the batch that is read
            batch = args.private_batch_size if args.privacy_mode == "none" else args.public_batch_size
            rate = min(1.0, batch / num_records)
        # An epoch is 1/q steps, rounded up once for the whole run (the CLI's and the Space's definition).
        planned = args.max_steps if args.max_steps > 0 else steps_for_epochs(rate, args.num_train_epochs)

        if self._resumed is not None:
            planned = self._restore_privacy_state(self._resumed, planned)
        elif private and args.target_epsilon is not None:
            self.noise_multiplier = calibrate_noise_multiplier(
                args.target_epsilon,
                self.sample_rate,
                steps=planned,
                delta=args.target_delta,
                accountant=args.accountant,
            )
        if private and args.stop_at_epsilon is not None:
            taken = self._resumed["steps"] if self._resumed is not None else 0
            first = compute_epsilon(
                self.sample_rate,
                self.noise_multiplier,
                steps=taken + 1,
                delta=args.target_delta,
                accountant=args.accountant,
            )
            if first > args.stop_at_epsilon:
                raise ValueError(
                    f"{'one step' if not taken else f'step {taken + 1}'} would already spend "
                    f"epsilon={first:.3g} > stop_at_epsilon={args.stop_at_epsilon}; "
                    f"{'raise the budget or the noise' if not taken else 'the budget is spent'}"
                )
        self.planned_steps = planned

    def get_train_dataloader(self):
        """One item per optimizer step: its indices (drawn here, in the main process, by the samplers)
        and its collated micro-batches (decoded in `dataloader_num_workers` worker processes, the
        next steps' while this one computes)."""
        self._plan()
        args, dataset = self.args, self.train_dataset
        num_records, rank, world = len(dataset), args.process_index, args.world_size
        private = self._private_indices
        if args.privacy_mode == "none":
            steps_per_epoch = math.ceil(num_records / args.private_batch_size)
        elif private:
            steps_per_epoch = math.ceil(len(private) / args.private_batch_size)
        else:
            steps_per_epoch = math.ceil(num_records / args.public_batch_size)

        # A resumed run draws fresh randomness: OS entropy, or (dp_seed, tests only) streams of its own,
        # so it never replays the Poisson draws or the noise of the steps already taken.
        resumed_at = self._resumed["steps"] if self._resumed is not None else 0

        def generator(stream: str, device="cpu"):
            return make_generator(args.dp_seed, f"{stream}@{resumed_at}" if resumed_at else stream, rank, device)

        private_sampler = public_sampler = None
        if private:
            mine = [private[i] for i in shard(len(private), rank, world)]
            private_sampler = PoissonBatchSampler(mine, self.sample_rate, steps_per_epoch, generator("private"))
        elif args.privacy_mode == "none":
            private_sampler = ShuffledBatchSampler(
                shard(num_records, rank, world),
                math.ceil(args.private_batch_size / world),
                steps_per_epoch,
                generator("private"),
            )
        if args.uses_public_branch:
            public_sampler = ShuffledBatchSampler(
                shard(num_records, rank, world),
                math.ceil(args.public_batch_size / world),
                steps_per_epoch,
                generator("public"),
            )
        self._noise_generator = generator("noise", device=args.device)
        workers = args.dataloader_num_workers
        return DataLoader(
            _StepBatches(dataset, self.data_collator, args.per_device_train_batch_size, args.uses_public_branch),
            sampler=_StepSampler(dataset, private_sampler, public_sampler, steps_per_epoch),
            batch_size=None,
            collate_fn=_as_is,
            num_workers=workers,
            pin_memory=args.dataloader_pin_memory and args.device.type == "cuda",
            prefetch_factor=args.dataloader_prefetch_factor if workers else None,
            persistent_workers=args.dataloader_persistent_workers and workers > 0,
            multiprocessing_context=getattr(args, "dataloader_multiprocessing_context", None) if workers else None,
        )

    def set_initial_training_values(self, args, dataloader):
        """The stock loop's step count, with epochs turned into steps by `steps_for_epochs` (`_plan`)."""
        values = list(super().set_initial_training_values(args, dataloader))
        num_train_epochs, steps_per_epoch, max_steps = values[0], values[1], values[-1]
        if max_steps != self.planned_steps:
            max_steps = self.planned_steps
            num_train_epochs = math.ceil(max_steps / steps_per_epoch)
        values[0], values[-1] = num_train_epochs, max_steps
        return tuple(values)

    # ------------------------------------------------------------------ checkpoints and resume

    def privacy_state(self) -> dict:
        """What a resumed run needs to continue this one's accounting (saved in every checkpoint)."""
        args = self.args
        return {
            "privacy_config": {name: getattr(args, name) for name in PRIVACY_CONFIG_FIELDS},
            "steps": self.state.global_step,
            "planned_steps": self.planned_steps,
            "sample_rate": self.sample_rate,
            "noise_multiplier": self.noise_multiplier,
            "training_rows": len(self.train_dataset),
            "private_records": self._private_records,
            "epsilon": self.privacy_spent()[0] if args.privacy_mode != "none" else None,
        }

    def _save_checkpoint(self, model, trial) -> None:
        output_dir = os.path.join(
            self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        )
        if self.args.should_save:  # written first: a checkpoint without it cannot be resumed
            os.makedirs(output_dir, exist_ok=True)
            with open(os.path.join(output_dir, PRIVACY_STATE_NAME), "w", encoding="utf-8") as f:
                json.dump(self.privacy_state(), f, indent=2)
            if self.branch_adam is not None:  # identical on every process: rank 0's copy is everyone's
                torch.save(self.branch_adam.state_dict(), os.path.join(output_dir, BRANCH_ADAM_NAME))
        super()._save_checkpoint(model, trial)

    def _check_branch_moments(self, checkpoint: str) -> None:
        """A branch_adam run resumes only with its moments, and only a branch_adam run from them."""
        saved = os.path.isfile(os.path.join(checkpoint, BRANCH_ADAM_NAME))
        if saved != self.args.branch_adam:
            raise ValueError(
                f"the checkpoint was trained with branch_adam={saved}, this run has branch_adam="
                f"{self.args.branch_adam}: the optimizer would change mid-run; resume with branch_adam={saved}"
            )

    def _check_resumable(self, saved: dict) -> None:
        """Refuse a checkpoint of another privacy configuration (before its weights are loaded)."""
        mine = {name: getattr(self.args, name) for name in PRIVACY_CONFIG_FIELDS}
        changed = {
            k: (saved["privacy_config"].get(k), v) for k, v in mine.items() if saved["privacy_config"].get(k) != v
        }
        if changed:
            listed = ", ".join(f"{k}: checkpoint {old!r}, now {new!r}" for k, (old, new) in changed.items())
            raise ValueError(
                f"the checkpoint was trained with another privacy configuration ({listed}); resume "
                "with the checkpoint's settings, or start a new run (its epsilon adds to this one's)"
            )

    def _restore_privacy_state(self, saved: dict, planned: int) -> int:
        """q, sigma and the record counts of the resumed run; returns the steps it may still plan."""
        counts = {"training_rows": len(self.train_dataset), "private_records": self._private_records}
        changed = {k: (saved[k], v) for k, v in counts.items() if saved[k] != v}
        if changed:
            listed = ", ".join(f"{k}: checkpoint {old}, now {new}" for k, (old, new) in changed.items())
            raise ValueError(
                f"the train dataset changed since the checkpoint ({listed}), so q and the accounting "
                "would not continue; resume on the same dataset or start a new run"
            )
        self.sample_rate, self.noise_multiplier = saved["sample_rate"], saved["noise_multiplier"]
        if planned > saved["planned_steps"]:
            logger.warning(
                f"the resumed run asks for {planned} steps but the checkpoint's run planned "
                f"{saved['planned_steps']} (sigma was chosen for them): training stops there"
            )
        planned = min(planned, saved["planned_steps"])
        if saved["steps"] >= planned:
            raise ValueError(
                f"the checkpoint already took {saved['steps']} steps of the {planned} planned: "
                "nothing is left to train (a further step would spend more than the plan)"
            )
        return planned

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """The checkpoint's weights, all of them. The stock loader reads the file's keys as they are,
        but `save_pretrained` renames some (VideoMAE's `query.bias` is saved as `q_bias`), which it
        would skip with a warning: load through `from_pretrained`, which maps them back, and copy strictly."""
        from transformers import PreTrainedModel

        model = model if model is not None else self.model
        if not isinstance(model, PreTrainedModel):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = type(model).from_pretrained(resume_from_checkpoint, dtype=next(model.parameters()).dtype)
        model.load_state_dict(saved.state_dict(), strict=True)

    def _init_training_state(self, *args, **kwargs):
        """The stock state (global step, logs) from the checkpoint, without replaying its batches:
        a resumed run draws fresh Poisson batches for its remaining steps (`get_train_dataloader`)."""
        epochs_trained, _ = super()._init_training_state(*args, **kwargs)
        if self._resumed is not None and self.state.global_step != self._resumed["steps"]:
            raise ValueError(
                f"the checkpoint's trainer state is at step {self.state.global_step} but its privacy "
                f"state at step {self._resumed['steps']}: the checkpoint is damaged"
            )
        return epochs_trained, 0

    def _rows(self, indices: list[int]) -> list[dict]:
        return [self.train_dataset[int(i)] for i in indices]

    def _require_mask_column(self, dataset) -> None:
        column = self.args.mask_column
        if hasattr(dataset, "column_names"):
            if column not in dataset.column_names:
                raise ValueError(
                    f"privacy_mode='maskdp' needs the mask column {column!r}, but the dataset has "
                    f"{dataset.column_names}; anonymize it first (hf-maskdp anonymize) or set mask_column="
                )
        elif any(dataset[i].get(column) is None for i in range(len(dataset))):
            raise ValueError(f"privacy_mode='maskdp' needs the mask column {column!r} in every row")

    def _records_with_sensitive_content(self, dataset) -> list[int]:
        """Records whose mask has any `m = 1` pixel, as `check_masks` found them on the packed bits
        (through Arrow, without the dataset's transform: no mask is decoded). Masks are public, so
        this choice leaks nothing; the others have no sensitive content and only feed the public branch."""
        fully_public = set(self._mask_check.fully_public)
        return [i for i in range(len(dataset)) if i not in fully_public]

    def _check_dataset(self, dataset):
        """Fail before training on rows the collator cannot read (withheld clips, missing columns,
        a mask whose shape does not match its clip)."""
        if len(dataset) == 0:
            raise ValueError("the train dataset is empty")
        column = getattr(self.data_collator, "video_column", "video")
        withheld = withheld_rows(dataset, column)
        if withheld:
            raise ValueError(
                f"{len(withheld)} of {len(dataset)} rows have no video: the anonymizer withheld them because they "
                f"may still show a real person{_status_counts(dataset, withheld)}. Train on the published rows: "
                f"`train_dataset = train_dataset.filter(lambda video: video is not None, input_columns={column!r})` "
                "(`hf-maskdp train` does this and prints the count)"
            )
        if self.args.privacy_mode == "maskdp":
            self._require_mask_column(dataset)
        # Every row, before the first step: masks vouched for (docs/privacy.md) and of their clip's
        # shape (container headers, no decoding), labels the model can take.
        mask_check = check_masks(
            dataset,
            "train_dataset",
            trust_masks=self.args.trust_masks,
            vouch=self.args.uses_public_branch,
            mask_column=self.args.mask_column,
            video_column=column,
        )
        self._mask_check = mask_check if self.args.uses_public_branch else None
        check_labels(
            dataset,
            getattr(self.model.config, "num_labels", None),
            getattr(self.data_collator, "label_column", "label"),
        )
        rows = self._rows([0])
        self.data_collator(rows)
        if self.args.uses_public_branch:
            self.data_collator.public_batch(rows)

    # ------------------------------------------------------------------ the step

    def _prepare_for_training(self, max_steps, train_dataloader, resume_from_checkpoint):
        """No DDP wrapper (gradients are reduced once, by hand) and no accelerate data loader."""
        self.create_optimizer_and_scheduler(num_training_steps=max_steps)
        if resume_from_checkpoint is not None:  # the weights were loaded by train(), before this
            self._load_optimizer_and_scheduler(resume_from_checkpoint)
        if self.branch_adam is not None:
            self._check_plain_sgd()
            if resume_from_checkpoint is not None:
                path = os.path.join(resume_from_checkpoint, BRANCH_ADAM_NAME)
                self.branch_adam.load_state_dict(torch.load(path, map_location=self.args.device, weights_only=True))
        self.model_wrapped = self.model
        for attr in ("model", "optimizer", "lr_scheduler"):
            setattr(self.callback_handler, attr, getattr(self, attr))
        self.callback_handler.train_dataloader = train_dataloader
        return self.model, train_dataloader

    def _check_plain_sgd(self) -> None:
        """branch_adam's directions are the step: anything but plain SGD would transform them again."""
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # an accelerate wrapper's inner one
        plain = type(optimizer) is torch.optim.SGD and all(
            group["momentum"] == 0 and not group["nesterov"] for group in optimizer.param_groups
        )
        if not plain:
            raise ValueError(
                f"branch_adam=True needs plain SGD to step its directions, got {type(optimizer).__name__} "
                f"({[{k: v for k, v in g.items() if k != 'params'} for g in optimizer.param_groups][:1]}); "
                "use optim='sgd' without momentum in optim_args (Adam's first moment is the momentum)"
            )

    def training_step(self, model, inputs, *args, **kwargs) -> torch.Tensor:
        """Set `p.grad` to this step's update direction; return the public-branch loss (or the
        plain loss in "none" mode), never a loss computed on private data under DP."""
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        cfg = self.args
        # Micro-batches collated by the loader's workers, or here from the indices (a step built by hand).
        private_batches, public_batches = inputs.get("private_batches"), inputs.get("public_batches")
        update, loss = None, torch.tensor(0.0, device=cfg.device)
        if cfg.privacy_mode == "none":
            update, loss = self._mean_gradient(inputs["private"], params, public=False, batches=private_batches)
        if cfg.is_private and self._private_records:
            update = self._private_gradient(inputs["private"], params, private_batches)
            if self.branch_adam is not None:  # the noisy G_priv only: post-processing
                update = self.branch_adam.direction("private", update)
            update.mul_(cfg.private_grad_weight)
        if cfg.uses_public_branch:
            public, loss = self._mean_gradient(inputs["public"], params, public=True, batches=public_batches)
            if self.branch_adam is not None:
                public = self.branch_adam.direction("public", public)
            update = (
                public.mul_(cfg.public_grad_weight)
                if update is None
                else update.add_(public, alpha=cfg.public_grad_weight)
            )
        if update is None:
            update = torch.zeros(sum(p.numel() for p in params), device=cfg.device)
        # Checked on the noisy update and the weights (public, post-processing), not per example.
        if not (torch.isfinite(update).all() and all(torch.isfinite(p).all() for p in params)):
            raise FloatingPointError(
                "the model or its update is NaN or infinite; lower the learning rate or check the model and inputs"
            )
        for p, g in zip(params, update.split([p.numel() for p in params])):
            p.grad = g.view_as(p)
        return loss

    def _micro_batches(self, indices: list[int], public: bool) -> list[dict]:
        """Collated micro-batches of `indices`, in this process (the loader does it in workers)."""
        return collate_micro_batches(
            self.train_dataset, self.data_collator, indices, self.args.per_device_train_batch_size, public
        )

    def _loss_sum(self, pixel_values, labels, bool_masked_pos=None):
        """Summed cross-entropy of a micro-batch (a sum of per-example terms, as the private branch needs).
        bf16: the forward runs under autocast from the first step to the last, in both branches; the
        gradients, per-example norms and the clipped sum stay in fp32 (`mechanism.accumulate_clipped`)."""
        device = self.args.device
        kwargs = {} if bool_masked_pos is None else {"bool_masked_pos": bool_masked_pos.to(device)}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.args.bf16):
            logits = self.model(pixel_values=pixel_values.to(device), **kwargs).logits
            return F.cross_entropy(
                logits.float(), labels.to(device), reduction="sum", label_smoothing=self.args.label_smoothing_factor
            )

    def _private_gradient(self, indices: list[int], params, batches: list[dict] | None = None) -> torch.Tensor:
        """G_priv, flat: clipped per-example gradients on full clips, noise once, / (q N)."""
        kept = self._audit_private_indices(indices)
        if kept != indices:  # the loader's batches hold the removed records: collate again
            indices, batches = kept, None
        total = torch.zeros(sum(p.numel() for p in params), device=self.args.device)
        views = [t.view_as(p) for t, p in zip(total.split([p.numel() for p in params]), params)]
        self._per_sample.enable_hooks()
        try:
            for batch in batches if batches is not None else self._micro_batches(indices, public=False):
                loss = self._loss_sum(batch["pixel_values"], batch["labels"])
                mechanism.per_sample_backward(loss, mechanism.backward_targets(self.model))
                mechanism.accumulate_clipped(params, self.args.per_sample_clip_norm, views)
        finally:
            self._per_sample.disable_hooks()
        return mechanism.privatize(
            total,
            self._audit_noise_multiplier(),
            self.args.per_sample_clip_norm,
            expected_batch_size=self.args.private_batch_size,
            generator=self._noise_generator,
            add_noise=self.args.process_index == 0,
        )

    # ------------------------------------------------------------------ audit hooks
    # Extension points for the empirical privacy audit (`hf_maskdp.training.audit`), which subclasses
    # the trainer to run a counterfactual dataset or a deliberately broken variant. Training never
    # overrides them; an override voids the accounting.

    def _audit_private_indices(self, indices: list[int]) -> list[int]:
        """The drawn records whose gradients enter this step's private sum (all of them). The audit
        drops its canary to run the adjacent dataset in which the canary's sensitive content is ⊥."""
        return indices

    def _audit_noise_multiplier(self) -> float:
        """σ of this step's noise (the accounted `noise_multiplier`). The audit's "no_noise" variant
        returns 0 while the accountant still states σ: a bug the audit must catch."""
        return self.noise_multiplier

    def _mean_gradient(
        self, indices: list[int], params, public: bool, batches: list[dict] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat mean loss gradient over the batch (all processes), and the mean loss; public views if `public`."""
        for p in params:
            p.grad = None
        count, loss_sum = 0, torch.zeros((), device=self.args.device)
        for batch in batches if batches is not None else self._micro_batches(indices, public):
            if public:
                loss, n = self._public_loss_sum(batch)
            else:
                loss, n = self._loss_sum(batch["pixel_values"], batch["labels"]), len(batch["labels"])
            if n:
                loss.backward()
                loss_sum += loss.detach()
                count += n
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
            + [loss_sum.reshape(1), torch.tensor([float(count)], device=loss_sum.device)]
        )
        for p in params:
            p.grad = None  # the raw gradient stays in `flat` only
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= max(flat[-1].item(), 1.0)  # no usable clip anywhere: a zero gradient
        return flat[:-2], flat[-2].detach()

    def _public_loss_sum(self, batch):
        """Summed loss of the public views; clips with nothing public are skipped (docs/privacy.md, "One training step", step 4)."""
        mask = batch["sensitive_mask"]
        if self.args.public_view == "fill":
            keep = has_public_content(mask, "fill")
            if not keep.any():
                return None, 0
            return self._loss_sum(batch["pixel_values"][keep], batch["labels"][keep]), int(keep.sum())
        config = self.model.config
        sensitive = token_mask(mask, config.tubelet_size, config.patch_size)
        public_counts = (~sensitive).sum(dim=1)
        loss, n = None, 0
        # VideoMAE drops tokens per batch, not per clip: group clips with equal public-token counts,
        # so each clip's result equals running it alone (mean pooling over its own tokens).
        for count in public_counts.unique().tolist():
            if count == 0:
                continue
            group = public_counts == count
            part = self._loss_sum(batch["pixel_values"][group], batch["labels"][group], sensitive[group])
            loss = part if loss is None else loss + part
            n += int(group.sum())
        return loss, n

    # ------------------------------------------------------------------ side doors

    def _get_grad_norm(self, model, grad_norm=None):
        return None  # the stock Trainer logs the raw (non-private) gradient norm

    def log(self, logs: dict, *args, **kwargs) -> None:
        if self.args.privacy_mode == "dpsgd":
            logs.pop("loss", None)  # computed on private data without noise
            logs.pop("train_loss", None)
        logs.pop("grad_norm", None)
        if self.args.privacy_mode != "none":
            logs["epsilon"] = self.privacy_spent()[0]
        super().log(logs, *args, **kwargs)

    def prediction_step(self, model, inputs, *args, **kwargs):
        inputs = {k: v for k, v in inputs.items() if k != "sensitive_mask"}
        return super().prediction_step(model, inputs, *args, **kwargs)

    # ------------------------------------------------------------------ saving

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        record = self.privacy_record()
        if hasattr(self.model, "config"):
            self.model.config.maskdp = record
        super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            with open(os.path.join(output_dir, PRIVACY_RECORD_FILE), "w", encoding="utf-8") as f:
                json.dump(record, f, indent=2)

    def create_model_card(self, *args, **kwargs) -> None:
        """The MaskDP model card (`hf_maskdp.hub.write_model_card`): ε, δ, what is protected."""
        if not self.is_world_process_zero():
            return
        from ..hub import write_model_card

        dataset = kwargs.get("dataset")
        evals = {k: v for log in self.state.log_history for k, v in log.items() if k.startswith("eval_")}
        write_model_card(
            self.args.output_dir,
            self.privacy_record(),
            model_name=kwargs.get("model_name"),
            dataset_info={"name": dataset} if isinstance(dataset, str) else None,
            eval_results=evals or None,
        )


class BranchAdam:
    """Adam's moments for each branch of the update (`MaskDPConfig(branch_adam=True)`): `direction`
    turns a branch's flat gradient into its bias-corrected Adam direction, `m̂ / (√v̂ + eps)` (the step
    of `torch.optim.Adam` at lr 1). The private branch's moments only ever see the noisy G_priv, which
    `privatize` makes identical on every process, as is the all-reduced G_pub: so are the moments."""

    def __init__(self, beta1: float, beta2: float, eps: float):
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.moments: dict[str, dict] = {}  # branch -> {"step", "exp_avg", "exp_avg_sq"}

    def direction(self, branch: str, grad: torch.Tensor) -> torch.Tensor:
        state = self.moments.setdefault(
            branch, {"step": 0, "exp_avg": torch.zeros_like(grad), "exp_avg_sq": torch.zeros_like(grad)}
        )
        state["step"] += 1
        state["exp_avg"].lerp_(grad, 1 - self.beta1)
        state["exp_avg_sq"].mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        bias1, bias2 = 1 - self.beta1 ** state["step"], 1 - self.beta2 ** state["step"]
        return (state["exp_avg"] / bias1) / (state["exp_avg_sq"].sqrt() / math.sqrt(bias2) + self.eps)

    def state_dict(self) -> dict:
        return {"betas": (self.beta1, self.beta2), "eps": self.eps, "moments": self.moments}

    def load_state_dict(self, saved: dict) -> None:
        if tuple(saved["betas"]) != (self.beta1, self.beta2) or saved["eps"] != self.eps:
            raise ValueError(
                f"the checkpoint's branch moments were kept with betas={tuple(saved['betas'])}, eps={saved['eps']}; "
                f"this run has ({self.beta1}, {self.beta2}), {self.eps}: resume with the checkpoint's adam_beta1/2, "
                "adam_epsilon"
            )
        self.moments = {branch: {**state, "step": int(state["step"])} for branch, state in saved["moments"].items()}


def read_privacy_state(checkpoint: str) -> dict:
    """The privacy state `MaskDPTrainer` saves in each checkpoint (`maskdp_state.json`)."""
    path = os.path.join(checkpoint, PRIVACY_STATE_NAME)
    if not os.path.isfile(path):
        raise ValueError(
            f"{checkpoint} has no {PRIVACY_STATE_NAME}: it was not saved by MaskDPTrainer, so the steps "
            "and noise it already spent are unknown; start a new run instead"
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def withheld_rows(dataset, video_column: str = "video") -> list[int]:
    """Indices of the rows without a video: clips the anonymizer withheld (status "no_person",
    "partial: ...", "error: ..."), which may still show a real person and cannot be trained on."""
    if hasattr(dataset, "column_names"):  # a datasets.Dataset
        if video_column not in dataset.column_names:
            return []  # the collator names the missing column
        missing = dataset.with_format("arrow")[video_column].is_null().to_pylist()  # reads no video bytes
    else:
        rows = (dataset[i] for i in range(len(dataset)))
        missing = [video_column in row and row[video_column] is None for row in rows]
    return [i for i, m in enumerate(missing) if m]


def _status_counts(dataset, indices: list[int]) -> str:
    if "anonymization" not in getattr(dataset, "column_names", ()):
        return ""
    statuses = Counter(str(dataset[i]["anonymization"]).split(":")[0] for i in indices)
    return " (" + ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items())) + ")"


def collate_micro_batches(dataset, collator, indices: list[int], size: int, public: bool) -> list[dict]:
    """Rows `indices` of `dataset` as collated micro-batches of `size`: full clips, or public views."""
    collate = collator.public_batch if public else collator
    return [collate([dataset[int(i)] for i in indices[start : start + size]]) for start in range(0, len(indices), size)]


class _StepBatches(torch.utils.data.Dataset):
    """What a DataLoader worker does for one step: decode and collate the rows the samplers chose
    (in the main process). Output depends only on the indices, so any number of workers gives
    the same batches."""

    def __init__(self, dataset, collator, micro_batch_size: int, public_views: bool):
        self.dataset, self.collator = dataset, collator
        self.micro_batch_size, self.public_views = micro_batch_size, public_views

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, step: dict) -> dict:
        size = self.micro_batch_size
        return {
            **step,
            "private_batches": collate_micro_batches(self.dataset, self.collator, step["private"], size, False),
            "public_batches": collate_micro_batches(self.dataset, self.collator, step["public"], size, True)
            if self.public_views
            else [],
        }


def _as_is(step: dict) -> dict:
    return step  # the step is collated already (a module-level function: workers may need to pickle it)


class _StepSampler:
    """Sampler of the step loader: yields each step's index sets, in the main process."""

    def __init__(self, dataset, private_sampler, public_sampler, steps: int):
        self.dataset = dataset
        self.private_sampler, self.public_sampler = private_sampler, public_sampler
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        private = iter(self.private_sampler) if self.private_sampler is not None else repeat([])
        public = iter(self.public_sampler) if self.public_sampler is not None else repeat([])
        for _ in range(self.steps):
            yield {"private": next(private), "public": next(public)}


class _EpsilonBudget(TrainerCallback):
    """Stops training before the step that would take epsilon past `stop_at_epsilon`."""

    def __init__(self, trainer: MaskDPTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        budget = args.stop_at_epsilon
        if budget is not None and self.trainer.privacy_spent(state.global_step + 1)[0] > budget:
            control.should_training_stop = True
        return control
