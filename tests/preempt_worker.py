"""One process of the preemption tests (``tests/training/test_preemption.py``): a long run that
the test stops with signals. Writes ``RUN_DIR/pid-RANK`` at start and, when ``fit`` ends,
``RUN_DIR/result-RANK.json`` (``status``, ``steps``); exits with the run's exit status.

    python tests/preempt_worker.py RUN_DIR 1 STEP_SLEEP_S
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/preempt_worker.py RUN_DIR 2 STEP_SLEEP_S

``STEP_SLEEP_S``: each step sleeps this long in its transform (room for a second signal).
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convergent.training.loop import Trainer  # noqa: E402
from convergent.training.status import RunStopped  # noqa: E402
from convergent.workflows.summary import exit_status  # noqa: E402
from tests.training_helpers import (  # noqa: E402
    RegressTask,
    SyntheticImages,
    build,
    configs,
    eval_transform,
    shut_down_and_exit,
)

STEPS = 100_000  # never reached: the test stops the run


def main(run_dir: Path, devices: int, sleep_s: float) -> int:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"pid-{os.environ.get('RANK', '0')}").write_text(str(os.getpid()))
    strategy = "ddp" if devices > 1 else "auto"
    trainer_cfg, optim_cfg = configs(max_steps=STEPS, devices=devices, strategy=strategy, checkpoint_every=1000)
    trainer = Trainer(trainer_cfg, optim_cfg, run_dir, batch_size=8, progress=False)

    def slow_transform(images, generator):
        time.sleep(sleep_s)
        return eval_transform(images, generator)

    try:
        summary = trainer.fit(build(RegressTask), SyntheticImages(40), slow_transform)
    except RunStopped as stopped:
        summary = stopped.summary
    result = {"status": summary["status"], "steps": summary["steps"]}
    (run_dir / f"result-{trainer.fabric.global_rank}.json").write_text(json.dumps(result))
    return exit_status(summary)


if __name__ == "__main__":
    shut_down_and_exit(main(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
