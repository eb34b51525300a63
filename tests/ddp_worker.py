"""One process of the DDP test (``tests/training/test_ddp.py``); launched by torchrun, or
imported and called with ``devices=1`` for the single-process reference run.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py \
        RUN_DIR DEVICES ACCUMULATE [STRATEGY [MAX_STEPS [resume]]]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convergent.training.loop import Trainer  # noqa: E402
from tests.training_helpers import (  # noqa: E402
    RegressTask,
    SyntheticImages,
    build,
    configs,
    eval_transform,
    run_worker,
    save_gathered,
)

BATCH, STEPS = 8, 6


def main(run_dir: str, devices: int, accumulate: int, strategy: str | None = None, max_steps: int = STEPS,
         resume: bool = False) -> dict:  # fmt: skip
    strategy = strategy or ("ddp" if devices > 1 else "auto")
    trainer_cfg, optim_cfg = configs(
        max_steps=max_steps, devices=devices, strategy=strategy, optim_accumulate=accumulate, checkpoint_every=3
    )
    trainer = Trainer(trainer_cfg, optim_cfg, run_dir, batch_size=BATCH, progress=False)
    task = build(RegressTask)  # after Trainer(): seeded identically on every process
    # one file found unreadable while the dataset was built: the same in every process, counted once
    data = SyntheticImages(40, skipped=[("bad/0.png", "cannot decode")])
    summary = trainer.fit(task, data, eval_transform, resume=resume)
    save_gathered(trainer, task, run_dir)
    return summary


if __name__ == "__main__":
    run_worker(main)
