"""One process of the DDP test (``tests/test_training_ddp.py``); launched by torchrun, or
imported and called with ``devices=1`` for the single-process reference run.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py RUN_DIR
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convergent.training.loop import Trainer  # noqa: E402
from tests.training_helpers import RegressTask, SyntheticImages, build, configs, eval_transform  # noqa: E402

BATCH, STEPS = 8, 6


def main(run_dir: str, devices: int, accumulate: int) -> dict:
    trainer_cfg, optim_cfg = configs(
        max_steps=STEPS, devices=devices, strategy="ddp" if devices > 1 else "auto", optim_accumulate=accumulate
    )
    trainer = Trainer(trainer_cfg, optim_cfg, run_dir, batch_size=BATCH, progress=False)
    task = build(RegressTask)  # after Trainer(): seeded identically on every process
    return trainer.fit(task, SyntheticImages(40), eval_transform)


if __name__ == "__main__":
    import torch.distributed as dist

    main(sys.argv[1], devices=int(sys.argv[2]), accumulate=int(sys.argv[3]))
    if dist.is_initialized():  # a clean shutdown: gloo threads left running abort the process at exit
        dist.barrier()
        dist.destroy_process_group()
