"""Run by tests/test_distributed.py under `accelerate launch --multi_gpu --num_processes 2`
(or torchrun): one MaskDP run on 2 CPU processes; rank 0 writes what the test checks as JSON."""

import json
import sys

import torch
import torch.distributed as dist
from maskdp_helpers import make_rows, tiny_args, tiny_collator, tiny_model

from hf_maskdp.training.trainer import MaskDPTrainer


def main(out_path: str, use_cpu: bool = True) -> None:
    from pathlib import Path

    tmp = Path(out_path).parent
    sigma, clip = 2.0, 0.5
    try:
        noise_run = MaskDPTrainer(
            model=tiny_model(),
            data_collator=tiny_collator(),
            train_dataset=make_rows(8),
            args=tiny_args(
                tmp, privacy_mode="dpsgd", noise_multiplier=sigma, per_sample_clip_norm=clip, use_cpu=use_cpu
            ),
        )
    except ValueError as err:
        Path(out_path).write_text(json.dumps({"error": str(err)}))
        return
    # A step with no data: the update is the noise alone, all-reduced over both ranks.
    noise_run.get_train_dataloader()
    noise_run.training_step(noise_run.model, {"private": [], "public": []})
    noise = torch.cat([p.grad.reshape(-1) for p in noise_run.model.parameters()])
    noise_std_ratio = noise.std().item() / (sigma * clip / 2)  # q N = private_batch_size = 2

    trainer = MaskDPTrainer(
        model=tiny_model(),
        data_collator=tiny_collator(),
        train_dataset=make_rows(8),
        args=tiny_args(tmp, num_train_epochs=2),
    )
    trainer.train()
    flat = _flat(trainer.model)
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    noises = [torch.empty_like(noise) for _ in range(dist.get_world_size())]
    dist.all_gather(noises, noise)
    # branch_adam: each process keeps the moments of the all-reduced gradients, so all hold the same.
    branch = MaskDPTrainer(
        model=tiny_model(),
        data_collator=tiny_collator(),
        train_dataset=make_rows(8),
        args=tiny_args(tmp, num_train_epochs=1, branch_adam=True, optim="sgd", learning_rate=0.05),
    )
    branch.train()
    moments = branch.branch_adam.moments
    local = torch.cat([moments[b][k] for b in ("private", "public") for k in ("exp_avg", "exp_avg_sq")])
    local = torch.cat([local, _flat(branch.model)])
    branch_gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(branch_gathered, local)
    if dist.get_rank() == 0:
        Path(out_path).write_text(
            json.dumps(
                {
                    "world_size": trainer.args.world_size,
                    "noise_std_ratio": noise_std_ratio,
                    "noise_equal_on_ranks": bool(torch.equal(noises[0], noises[1])),
                    "params_max_diff": (gathered[0] - gathered[1]).abs().max().item(),
                    "steps": trainer.state.global_step,
                    "sample_rate": trainer.sample_rate,
                    "epsilon": trainer.privacy_spent()[0],
                    "branch_adam_equal_on_ranks": bool(torch.equal(*branch_gathered)),
                    "branch_adam_steps": [moments[b]["step"] for b in ("private", "public")],
                }
            )
        )


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


if __name__ == "__main__":
    main(sys.argv[1], use_cpu="--no-cpu" not in sys.argv)
    # Tear gloo down before the interpreter exits: otherwise a rank can abort at exit
    # ("terminate called without an active exception"), failing a run that succeeded.
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
