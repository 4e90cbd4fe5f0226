"""MaskDPTrainer at scale (issue 15): one epochs -> steps, both record counts, refused features,
bf16, resume, and step batches collated in DataLoader workers. Tiny VideoMAE on CPU."""

import copy
import json
import shutil

import pytest
import torch
from maskdp_helpers import make_rows, tiny_args, tiny_collator, tiny_model
from safetensors.torch import load_file
from transformers import TrainerCallback
from transformers.trainer_pt_utils import LabelSmoother

from hf_maskdp.privacy.accounting import compute_epsilon, steps_for_epochs
from hf_maskdp.privacy.sampling import make_generator
from hf_maskdp.training.trainer import PRIVACY_STATE_NAME, MaskDPTrainer


def _trainer(tmp_path, rows, model=None, **overrides):
    return MaskDPTrainer(
        model=model or tiny_model(),
        args=tiny_args(tmp_path, **overrides),
        train_dataset=rows,
        data_collator=tiny_collator(),
    )


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# 5. One definition of epochs -> steps ------------------------------------------------------


def test_a_sigma_from_the_cli_spends_at_most_the_cli_target_in_the_trainer(tmp_path, capsys):
    from hf_maskdp.cli import main

    rows, batch, epochs, target = make_rows(7, mask="all"), 2, 2, 2.0
    q = batch / len(rows)
    assert (
        main(
            ["privacy", "calibrate", "--target-epsilon", str(target), "--sample-rate", repr(q), "--epochs", str(epochs)]
        )
        == 0
    )
    sigma = float(capsys.readouterr().out)
    # ceil(E / q) = 7 steps; E * ceil(N / B) would be 8, and 8 steps at this sigma overspend the target.
    assert steps_for_epochs(q, epochs) == 7 and compute_epsilon(q, sigma, steps=8) > target
    trainer = _trainer(tmp_path, rows, noise_multiplier=sigma, private_batch_size=batch, num_train_epochs=epochs)
    trainer.train()
    assert trainer.state.global_step == 7
    assert trainer.privacy_spent()[0] <= target


# 6. The record names both counts -----------------------------------------------------------


def test_record_and_card_name_all_rows_and_the_private_records_q_is_computed_from(tmp_path):
    rows = make_rows(4, mask="half") + make_rows(2, mask="none", seed=1)
    trainer = _trainer(tmp_path, rows, max_steps=1)
    trainer.train()
    record = trainer.privacy_record()
    assert record["training_rows"] == 6 and record["private_records"] == 4 and record["sample_rate"] == 2 / 4
    assert "dataset_size" not in record
    trainer.save_model()
    trainer.create_model_card()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| Training rows (all; the public branch draws from them) | 6 |" in card
    assert "| Private records N (with sensitive content; q = private batch / N) | 4 |" in card


# 4. Features that work, or are refused at configuration time ------------------------------


@pytest.mark.parametrize(
    "option, value, alternative",
    [
        ("auto_find_batch_size", True, "per_device_train_batch_size"),
        ("deepspeed", {"train_batch_size": 2}, "accelerate launch --multi_gpu"),
        ("fsdp", "full_shard", "accelerate launch --multi_gpu"),
        ("torch_compile", True, "torch_compile=False"),
        ("gradient_checkpointing", True, "per_device_train_batch_size"),
        ("activation_checkpointing", True, "per_device_train_batch_size"),
        ("fp16", True, "bf16=True"),
    ],
)
def test_unsupported_training_arguments_are_refused_naming_the_alternative(tmp_path, option, value, alternative):
    with pytest.raises(ValueError, match=rf"{option}=.*not supported by MaskDPTrainer.*{alternative}"):
        tiny_args(tmp_path, **{option: value})


def test_custom_losses_are_refused_when_the_trainer_is_built(tmp_path):
    args, rows = tiny_args(tmp_path), make_rows(2)
    with pytest.raises(ValueError, match="compute_loss_func is not supported.*label_smoothing_factor"):
        MaskDPTrainer(
            model=tiny_model(),
            args=args,
            train_dataset=rows,
            data_collator=tiny_collator(),
            compute_loss_func=lambda outputs, labels, num_items_in_batch=None: outputs.logits.sum(),
        )

    class OwnLoss(MaskDPTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            return torch.zeros(())

    with pytest.raises(ValueError, match="overrides compute_loss.*override _loss_sum"):
        OwnLoss(model=tiny_model(), args=args, train_dataset=rows, data_collator=tiny_collator())


def test_label_smoothing_is_the_stock_label_smoother_summed_over_examples(tmp_path):
    trainer = _trainer(tmp_path, make_rows(3), label_smoothing_factor=0.2)
    batch = tiny_collator()(make_rows(3, mask="random"))
    ours = trainer._loss_sum(batch["pixel_values"], batch["labels"])
    outputs = trainer.model(pixel_values=batch["pixel_values"])
    stock = LabelSmoother(epsilon=0.2)(outputs, batch["labels"]) * 3  # the stock Trainer's mean loss
    plain = torch.nn.functional.cross_entropy(outputs.logits, batch["labels"], reduction="sum")
    assert torch.allclose(ours, stock, atol=1e-5) and not torch.allclose(ours, plain, atol=1e-3)


# 2. bf16: one precision from the first step to the last ------------------------------------


class _ForwardDtypes(TrainerCallback):
    """Records the dtype of the classifier's output in every training forward."""

    def __init__(self, model):
        self.dtypes = []
        model.classifier.register_forward_hook(
            lambda module, inputs, output: self.dtypes.append(output.dtype) if module.training else None
        )


def test_bf16_runs_both_branches_in_autocast_and_a_mid_run_evaluation_changes_nothing(tmp_path):
    rows = make_rows(8, mask="random")
    weights, dtypes = {}, {}
    for name, extra in [
        ("fp32", {}),
        ("bf16", {"bf16": True}),
        ("bf16+eval", {"bf16": True, "eval_strategy": "steps", "eval_steps": 1}),
    ]:
        model = tiny_model()
        probe = _ForwardDtypes(model)
        trainer = MaskDPTrainer(
            model=model,
            args=tiny_args(tmp_path, num_train_epochs=2, **extra),
            train_dataset=rows,
            eval_dataset=rows[:2],
            data_collator=tiny_collator(),
        )
        trainer.train()
        assert trainer.state.global_step == 8 and all(torch.isfinite(p).all() for p in model.parameters())
        weights[name], dtypes[name] = _weights(model), set(probe.dtypes)
    assert dtypes == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}, "bf16+eval": {torch.bfloat16}}
    assert any(log.get("eval_loss") is not None for log in trainer.state.log_history)  # it did evaluate
    assert _same_weights(weights["bf16"], weights["bf16+eval"])  # evaluating changed no training step
    assert not _same_weights(weights["fp32"], weights["bf16"])
    assert all(v.dtype == torch.float32 for v in weights["bf16"].values())  # fp32 master weights


# 3. Resume ---------------------------------------------------------------------------------


class _Interrupt(TrainerCallback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            control.should_training_stop = True


class _ResumedState(TrainerCallback):
    """What the trainer holds when the resumed loop starts: weights, optimizer, scheduler, noise stream."""

    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        self.weights, self.optimizer = _weights(model), copy.deepcopy(optimizer.state_dict())
        self.scheduler_step = lr_scheduler.last_epoch
        self.noise_state = self.trainer._noise_generator.get_state()


def _resumable(tmp_path, rows, model=None, **overrides):
    settings = dict(target_epsilon=3.0, noise_multiplier=None, num_train_epochs=2, save_strategy="steps", save_steps=3)
    return _trainer(tmp_path, rows, model=model, **{**settings, **overrides})


def test_an_interrupted_and_resumed_run_spends_what_one_run_spends(tmp_path):
    rows = make_rows(8)
    whole = _resumable(tmp_path / "whole", rows)
    whole.train()
    assert whole.state.global_step == 8

    interrupted = _resumable(tmp_path / "run", rows)
    interrupted.add_callback(_Interrupt(3))
    interrupted.train()
    checkpoint = tmp_path / "run" / "out" / "checkpoint-3"
    state = json.loads((checkpoint / PRIVACY_STATE_NAME).read_text())
    assert state["steps"] == 3 and state["planned_steps"] == 8 and state["private_records"] == 8
    assert state["noise_multiplier"] == whole.noise_multiplier and state["sample_rate"] == 0.25

    resumed = _resumable(tmp_path / "run", rows, model=tiny_model(seed=7))  # other initial weights
    probe = _ResumedState()
    probe.trainer = resumed
    resumed.add_callback(probe)
    resumed.train(resume_from_checkpoint=True)  # the last checkpoint in output_dir: checkpoint-3
    # The checkpoint's weights (VideoMAE's q_bias / v_bias included), optimizer and scheduler came back.
    assert "videomae.encoder.layer.0.attention.attention.q_bias" in load_file(checkpoint / "model.safetensors")
    assert _same_weights(probe.weights, _weights(interrupted.model))  # the model at step 3
    saved_optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert all(
        torch.equal(probe.optimizer["state"][k]["exp_avg"], saved_optimizer["state"][k]["exp_avg"])
        for k in saved_optimizer["state"]
    )
    assert probe.scheduler_step == 3
    # Fresh noise and Poisson streams: even with a fixed dp_seed, not a replay of steps 1-3.
    assert not torch.equal(probe.noise_state, make_generator(0, "noise").get_state())
    # Same q, sigma and steps as the uninterrupted run: the same epsilon.
    assert resumed.state.global_step == 8 and resumed.noise_multiplier == whole.noise_multiplier
    assert resumed.privacy_spent() == whole.privacy_spent()
    assert resumed.privacy_record()["epsilon"] == whole.privacy_record()["epsilon"] <= 3.0


def test_resume_stops_at_the_planned_steps_and_refuses_another_configuration(tmp_path):
    rows = make_rows(8)
    first = _resumable(tmp_path, rows)
    first.add_callback(_Interrupt(3))
    first.train()
    checkpoint = str(tmp_path / "out" / "checkpoint-3")
    planned_eps = first.privacy_spent(8)[0]

    longer = _resumable(tmp_path, rows, num_train_epochs=4)  # asks for 16 steps; sigma was chosen for 8
    longer.train(resume_from_checkpoint=checkpoint)
    assert longer.state.global_step == 8 and longer.privacy_spent()[0] == planned_eps
    with pytest.raises(ValueError, match="already took 8 steps of the 8 planned"):
        _resumable(tmp_path, rows).train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-8"))
    spent = first.privacy_spent(3)[0]
    with pytest.raises(ValueError, match="step 4 would already spend.*the budget is spent"):
        _resumable(tmp_path, rows, stop_at_epsilon=spent * 1.001).train(resume_from_checkpoint=checkpoint)

    fresh = tiny_model(seed=7)
    before = _weights(fresh)
    other = _resumable(tmp_path, rows, model=fresh, per_sample_clip_norm=0.5)
    with pytest.raises(
        ValueError, match="another privacy configuration.*per_sample_clip_norm: checkpoint 1.0, now 0.5"
    ):
        other.train(resume_from_checkpoint=checkpoint)
    assert _same_weights(before, _weights(fresh))  # refused before the checkpoint's weights were loaded
    with pytest.raises(ValueError, match="train dataset changed.*private_records: checkpoint 8, now 10"):
        _resumable(tmp_path, make_rows(10)).train(resume_from_checkpoint=checkpoint)
    foreign = tmp_path / "foreign"
    shutil.copytree(checkpoint, foreign)
    (foreign / PRIVACY_STATE_NAME).unlink()
    with pytest.raises(ValueError, match="not saved by MaskDPTrainer"):
        _resumable(tmp_path, rows).train(resume_from_checkpoint=str(foreign))


# 1. Step batches decoded and collated in DataLoader workers --------------------------------


def test_loader_workers_give_the_batches_of_the_main_process(tmp_path):
    rows = make_rows(8, mask="random")
    steps, weights = {}, {}
    for workers in (0, 2):
        trainer = _trainer(
            tmp_path, rows, dataloader_num_workers=workers, per_device_train_batch_size=1, private_batch_size=3
        )
        steps[workers] = list(trainer.get_train_dataloader())
        trainer = _trainer(tmp_path, rows, dataloader_num_workers=workers)
        trainer.train()
        weights[workers] = _weights(trainer.model)
    assert [(s["private"], s["public"]) for s in steps[0]] == [(s["private"], s["public"]) for s in steps[2]]
    assert any(len(s["private"]) > 1 for s in steps[0])  # micro-batches of 1: several per step
    for a, b in zip(steps[0], steps[2]):
        for branch in ("private_batches", "public_batches"):
            assert len(a[branch]) == len(b[branch])
            assert all(torch.equal(x[k], y[k]) for x, y in zip(a[branch], b[branch]) for k in x)
    assert _same_weights(weights[0], weights[2])
