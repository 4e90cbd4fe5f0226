"""MaskDPTrainer with `branch_adam=True`: Adam moments per branch, stepped by plain SGD (issue 12).
Tiny VideoMAE on CPU."""

import pytest
import torch
from maskdp_helpers import make_rows, randomize_sensitive, tiny_args, tiny_collator, tiny_model
from transformers import TrainerCallback

from hf_maskdp.training.trainer import BRANCH_ADAM_NAME, MaskDPTrainer

BRANCH_ADAM = dict(branch_adam=True, optim="sgd", lr_scheduler_type="constant", learning_rate=0.05)


def _trainer(tmp_path, rows, model=None, **overrides):
    return MaskDPTrainer(
        model=model or tiny_model(),
        args=tiny_args(tmp_path, **{**BRANCH_ADAM, **overrides}),
        train_dataset=rows,
        data_collator=tiny_collator(),
    )


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


def _record_branch_gradients(trainer):
    """Copies of each step's G_priv (as `_private_gradient` returns it) and G_pub."""
    seen = {"private": [], "public": []}
    private_gradient, mean_gradient = trainer._private_gradient, trainer._mean_gradient

    def private(*args, **kwargs):
        grad = private_gradient(*args, **kwargs)
        seen["private"].append(grad.clone())
        return grad

    def mean(indices, params, public, batches=None):
        grad, loss = mean_gradient(indices, params, public, batches)
        seen["public" if public else "none"].append(grad.clone())
        return grad, loss

    trainer._private_gradient, trainer._mean_gradient = private, mean
    return seen


def _torch_adam_directions(grads, betas=(0.9, 0.999), eps=1e-8):
    """The reference: torch.optim.Adam at lr 1 on a zero tensor, one step per gradient; minus its move."""
    param = torch.zeros_like(grads[0], requires_grad=True)
    adam = torch.optim.Adam([param], lr=1.0, betas=betas, eps=eps, foreach=False)
    directions = []
    for grad in grads:
        before = param.detach().clone()
        param.grad = grad.clone()
        adam.step()
        directions.append(before - param.detach())
    return directions


def test_the_step_is_two_torch_adams_combined_and_stepped_by_sgd(tmp_path):
    weights = dict(private_grad_weight=0.3, public_grad_weight=0.7)
    trainer = _trainer(tmp_path, make_rows(8), max_steps=3, **weights)
    seen = _record_branch_gradients(trainer)
    start = _flat(trainer.model)
    trainer.train()
    assert len(seen["private"]) == len(seen["public"]) == 3 and not seen.get("none")

    private, public = _torch_adam_directions(seen["private"]), _torch_adam_directions(seen["public"])
    expected = start.clone()
    for d_priv, d_pub in zip(private, public):
        expected -= 0.05 * (0.3 * d_priv + 0.7 * d_pub)
    assert torch.allclose(_flat(trainer.model), expected, rtol=1e-5, atol=1e-6)
    # The private moments are those of the tensors `_private_gradient` returned, and nothing else.
    assert trainer.branch_adam.moments["private"]["step"] == 3
    m = torch.zeros_like(start)
    for grad in seen["private"]:
        m = 0.9 * m + 0.1 * grad
    assert torch.allclose(trainer.branch_adam.moments["private"]["exp_avg"], m, rtol=1e-5, atol=1e-7)
    # One Adam over the weighted sum (what branch_adam replaces) would have gone elsewhere.
    summed = _torch_adam_directions([0.3 * a + 0.7 * b for a, b in zip(seen["private"], seen["public"])])
    one_adam = start - 0.05 * sum(summed)
    assert not torch.allclose(_flat(trainer.model), one_adam, rtol=1e-3, atol=1e-4)


def test_with_the_noisy_gradient_fixed_the_sensitive_pixels_change_nothing(tmp_path):
    """The private moments see only what `_private_gradient` returns: with that tensor forced, a
    dataset whose every sensitive pixel differs trains to bit-identical weights and moments."""
    rows = make_rows(8, mask="random")
    results = []
    for data in (rows, randomize_sensitive(rows)):
        trainer = _trainer(tmp_path, data, max_steps=3)
        noisy = torch.Generator().manual_seed(5)
        trainer._private_gradient = lambda indices, params, batches=None, g=noisy: torch.randn(
            sum(p.numel() for p in params), generator=g
        )
        trainer.train()
        results.append((_flat(trainer.model), trainer.branch_adam.state_dict()["moments"]))
    (weights_a, moments_a), (weights_b, moments_b) = results
    assert torch.equal(weights_a, weights_b)
    for branch in ("private", "public"):
        assert moments_a[branch]["step"] == moments_b[branch]["step"] == 3
        assert torch.equal(moments_a[branch]["exp_avg"], moments_b[branch]["exp_avg"])
        assert torch.equal(moments_a[branch]["exp_avg_sq"], moments_b[branch]["exp_avg_sq"])


class _Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step == 3
        return control


class _MomentsAtStart(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.moments = {
            branch: {k: v.clone() if torch.is_tensor(v) else v for k, v in state_.items()}
            for branch, state_ in self.trainer.branch_adam.moments.items()
        }


def test_resume_restores_the_moments_exactly_and_continues_them(tmp_path):
    """A resumed run draws fresh Poisson batches and noise (never a replay), so its weights cannot
    equal an uninterrupted run's; what must hold is that it continues from the very moments the
    interrupted run had, and that those give the same next direction."""
    rows = make_rows(8)
    resumable = dict(num_train_epochs=2, save_strategy="steps", save_steps=3)
    interrupted = _trainer(tmp_path, rows, **resumable)
    interrupted.add_callback(_Interrupt())
    interrupted.train()
    checkpoint = tmp_path / "out" / "checkpoint-3"
    assert (checkpoint / BRANCH_ADAM_NAME).is_file()

    resumed = _trainer(tmp_path, rows, model=tiny_model(seed=7), **resumable)
    probe = _MomentsAtStart(resumed)
    resumed.add_callback(probe)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for branch, state in interrupted.branch_adam.moments.items():
        assert probe.moments[branch]["step"] == state["step"] == 3
        assert torch.equal(probe.moments[branch]["exp_avg"], state["exp_avg"])
        assert torch.equal(probe.moments[branch]["exp_avg_sq"], state["exp_avg_sq"])
    assert resumed.state.global_step == 8
    assert all(state["step"] == 8 for state in resumed.branch_adam.moments.values())

    restored = _trainer(tmp_path, rows, **resumable).branch_adam
    restored.load_state_dict(torch.load(checkpoint / BRANCH_ADAM_NAME, weights_only=True))
    grad = torch.randn_like(interrupted.branch_adam.moments["public"]["exp_avg"])
    assert torch.equal(restored.direction("public", grad), interrupted.branch_adam.direction("public", grad))

    plain = _trainer(tmp_path / "plain", rows, branch_adam=False, **resumable)
    plain.add_callback(_Interrupt())
    plain.train()
    with pytest.raises(ValueError, match="trained with branch_adam=False, this run has branch_adam=True"):
        _trainer(tmp_path / "plain", rows, **resumable).train(resume_from_checkpoint=True)
    with pytest.raises(ValueError, match="trained with branch_adam=True, this run has branch_adam=False"):
        _trainer(tmp_path, rows, branch_adam=False, **resumable).train(resume_from_checkpoint=str(checkpoint))
    with pytest.raises(ValueError, match="betas=.*resume with the checkpoint's adam_beta1"):
        _trainer(tmp_path, rows, adam_beta2=0.99, **resumable).train(resume_from_checkpoint=str(checkpoint))


def test_branch_adam_refuses_what_makes_no_sense(tmp_path):
    with pytest.raises(ValueError, match="needs two branches.*use optim='adamw_torch'"):
        tiny_args(tmp_path, privacy_mode="dpsgd", **BRANCH_ADAM)
    with pytest.raises(ValueError, match="needs two branches"):
        tiny_args(tmp_path, privacy_mode="public_only", noise_multiplier=None, **BRANCH_ADAM)
    with pytest.raises(ValueError, match="needs optim='sgd'.*'adamw_torch' would precondition it a second time"):
        tiny_args(tmp_path, **{**BRANCH_ADAM, "optim": "adamw_torch"})
    for optim_args in ("momentum=0.9", "momentum=0.9,nesterov=True"):
        trainer = _trainer(tmp_path, make_rows(4), optim_args=optim_args)
        with pytest.raises(ValueError, match="needs plain SGD.*without momentum"):
            trainer.train()
        assert trainer.state.global_step == 0
    custom = MaskDPTrainer(
        model=(model := tiny_model()),
        args=tiny_args(tmp_path, **BRANCH_ADAM),
        train_dataset=make_rows(4),
        data_collator=tiny_collator(),
        optimizers=(torch.optim.Adam(model.parameters()), None),
    )
    with pytest.raises(ValueError, match="needs plain SGD to step its directions, got Adam"):
        custom.train()
