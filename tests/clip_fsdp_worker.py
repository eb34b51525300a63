"""One process of the CLIP FSDP test (``tests/training/test_fsdp.py``): the Trainer on the
tiny two-tower CLIP and the pairs of ``clip_ddp_worker``; launched by torchrun, or imported
and called with ``devices=1`` for the single-process reference run. One micro-batch per step
(a contrastive loss over B/2 pairs is not half of one over B), so W processes hold B/W pairs
each and the reference all B. Arguments as ``ddp_worker``'s:

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/clip_fsdp_worker.py \
        RUN_DIR DEVICES ACCUMULATE [STRATEGY [MAX_STEPS [resume]]]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convergent.data.protocol import ItemList  # noqa: E402
from convergent.training.loop import Trainer  # noqa: E402
from tests import clip_ddp_worker  # noqa: E402
from tests.training_helpers import configs, run_worker, save_gathered  # noqa: E402

BATCH, STEPS = clip_ddp_worker.BATCH, 4


def pairs() -> ItemList:
    """The B pairs of ``clip_ddp_worker.global_batch`` as items: every step trains on all of
    them, split over the processes by the sampler's epoch order."""
    batch = clip_ddp_worker.global_batch()
    return ItemList([{k: v[i] for k, v in batch.items()} for i in range(BATCH)])


def main(run_dir: str, devices: int, accumulate: int = 1, strategy: str | None = None, max_steps: int = STEPS,
         resume: bool = False) -> dict:  # fmt: skip
    strategy = strategy or ("ddp" if devices > 1 else "auto")
    trainer_cfg, optim_cfg = configs(
        max_steps=max_steps, devices=devices, strategy=strategy, optim_accumulate=accumulate, checkpoint_every=2
    )
    trainer = Trainer(trainer_cfg, optim_cfg, run_dir, batch_size=BATCH, progress=False)
    task = clip_ddp_worker.build()  # seeded: the same weights in every process
    summary = trainer.fit(task, pairs(), resume=resume)  # images are already float: no transform
    save_gathered(trainer, task, run_dir)
    return summary


if __name__ == "__main__":
    run_worker(main)
