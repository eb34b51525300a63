"""One process of the CLIP DDP test (``tests/tasks/test_clip_ddp.py``): plain ``torch.distributed``
(gloo), each of W processes holding B/W pairs of one global batch of B. Launched by

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/clip_ddp_worker.py OUT_DIR

For each mode it runs forward + backward on the local pairs, averages the gradients over the
processes (as DDP does) and, on rank 0, saves ``{"loss", "losses", "grads"}`` to
``OUT_DIR/<mode>.pt``: ``loss`` the mean over processes, ``losses`` each process's.

* ``global``: the task's loss (features gathered with gradient, full N x N logits);
* ``local``: ``local_loss=True`` (each process's rows against all gathered columns);
* ``nograd``: the same embeddings, but a gather without gradient (open_clip's
  ``gather_with_grad=False``): its gradients must differ, so the test can fail.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from convergent.backbones import build_backbone  # noqa: E402
from convergent.losses.contrastive import clip_loss  # noqa: E402
from convergent.tasks.clip import CLIP  # noqa: E402
from convergent.tasks.configs import CLIPConfig  # noqa: E402

BATCH = 8  # global
MODES = ("global", "local", "nograd")


def build(local_loss: bool = False) -> CLIP:
    """The same weights in every process (seeded)."""
    torch.manual_seed(0)
    cfg = CLIPConfig(text_backbone="clip_text_test", embed_dim=16, local_loss=local_loss)
    return CLIP(build_backbone("vit_clip_test"), cfg).train()


def global_batch() -> dict[str, torch.Tensor]:
    """B pairs; texts of different lengths, right-padded."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 999, (BATCH, 12), generator=g)
    lengths = torch.randint(4, 13, (BATCH,), generator=g)
    mask = (torch.arange(12) < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    ids[torch.arange(BATCH), lengths - 1] = 999  # end-of-text
    return {"image": torch.randn(BATCH, 3, 32, 32, generator=g), "input_ids": ids, "attention_mask": mask}


def loss_of(task: CLIP, batch: dict, mode: str) -> torch.Tensor:
    if mode != "nograd":
        return task(batch)["loss"]
    image = task.encode_image(batch["image"])
    text = task.encode_text(batch["input_ids"], batch["attention_mask"])
    return clip_loss(image, text, task.scale(), gather_with_grad=False).loss


def grads(task: CLIP) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in task.named_parameters() if p.grad is not None}


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    per = BATCH // world
    local = {k: v[rank * per : (rank + 1) * per] for k, v in global_batch().items()}
    for mode in MODES:
        task = build(local_loss=mode == "local")
        loss = loss_of(task, local, mode)
        loss.backward()
        result = grads(task)
        for g in result.values():  # DDP's gradient average
            dist.all_reduce(g)
            g /= world
        losses = [torch.zeros(()) for _ in range(world)]
        dist.all_gather(losses, loss.detach())
        if rank == 0:
            out = {"loss": torch.stack(losses).mean(), "losses": torch.stack(losses), "grads": result}
            torch.save(out, Path(out_dir) / f"{mode}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
    from tests.training_helpers import shut_down_and_exit

    shut_down_and_exit()
