"""One process of the distributed loss test (``tests/tasks/test_clip_ddp.py``): plain
``torch.distributed`` (gloo), each of W processes holding B/W rows of one global batch of B
features. Launched by

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/contrastive_ddp_worker.py OUT_DIR

For each loss it computes the local loss, backpropagates it (through the gather or the ring
exchange, which pass gradients back to the process that made each row) and, on rank 0, saves
``{"losses", "grads", "scalars"}`` to ``OUT_DIR/<loss>.pt``: each process's loss, the
gradients of every process's local features in rank order, and the DDP-averaged gradients of
the logit scale and bias (SigLIP).

* ``nt_xent``: SimCLR's NT-Xent, both views gathered with gradient;
* ``siglip``: SigLIP's sigmoid loss, text chunks passed around the ring (W - 1 exchanges).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from convergent.losses.contrastive import nt_xent, siglip_loss  # noqa: E402

BATCH, DIM = 8, 16  # global
LOSSES = ("nt_xent", "siglip")
TEMPERATURE = 0.2


def global_features() -> dict[str, torch.Tensor]:
    """Two (B, D) feature sets (views, or images and texts), L2-normalised, plus scale and bias."""
    g = torch.Generator().manual_seed(3)
    a, b = (torch.nn.functional.normalize(torch.randn(BATCH, DIM, generator=g), dim=1) for _ in range(2))
    return {"a": a, "b": b, "scale": torch.tensor(10.0), "bias": torch.tensor(-3.0)}


def loss_of(name: str, x: dict[str, torch.Tensor]) -> torch.Tensor:
    if name == "nt_xent":
        return nt_xent(x["a"], x["b"], TEMPERATURE)
    return siglip_loss(x["a"], x["b"], x["scale"], x["bias"])


def leaves(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone().requires_grad_(True) for k, v in x.items()}


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    per = BATCH // world
    for name in LOSSES:
        full = global_features()
        local = leaves({k: (v[rank * per : (rank + 1) * per] if v.ndim else v) for k, v in full.items()})
        loss = loss_of(name, local)
        loss.backward()
        rows = {}
        for k in ("a", "b"):  # every process's local gradients, in rank order
            parts = [torch.empty_like(local[k].grad) for _ in range(world)]
            dist.all_gather(parts, local[k].grad)
            rows[k] = torch.cat(parts)
        scalars = {}
        for k in ("scale", "bias"):  # DDP's average of a replicated parameter's gradient
            g = local[k].grad if local[k].grad is not None else torch.zeros(())
            dist.all_reduce(g)
            scalars[k] = g / world
        losses = [torch.zeros(()) for _ in range(world)]
        dist.all_gather(losses, loss.detach())
        if rank == 0:
            torch.save({"losses": torch.stack(losses), "grads": rows, "scalars": scalars}, Path(out_dir) / f"{name}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
    from tests.training_helpers import shut_down_and_exit

    shut_down_and_exit()
