"""One process of the distributed quantiser test (``tests/layers/test_quantize.py``): plain
``torch.distributed`` (gloo), each of W processes quantising B/W rows of one global batch for a
few training steps. Launched by

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/quantize_ddp_worker.py OUT_DIR

Rank r saves ``OUT_DIR/rank<r>.pt``: ``{"codebook", "ema_count", "restart_codebook"}`` after
STEPS steps without restarts, and the codebook after one step with restarts on.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from convergent.layers.quantize import VectorQuantizer  # noqa: E402

CODES, DIM, BATCH, STEPS = 8, 4, 12, 3  # BATCH global


def quantizer(restart_threshold: float = 0.0) -> VectorQuantizer:
    torch.manual_seed(0)
    return VectorQuantizer(CODES, DIM, decay=0.9, restart_threshold=restart_threshold).train()


def global_batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(BATCH, DIM, generator=g) for _ in range(STEPS)]


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    vq = quantizer()
    for x in global_batches():
        vq(x.chunk(world)[rank])
    restart = quantizer(restart_threshold=1.0)
    torch.manual_seed(100 + rank)  # different RNG states: the restart draw must still agree
    restart(global_batches()[0].chunk(world)[rank])
    torch.save({"codebook": vq.codebook, "ema_count": vq.ema_count, "restart_codebook": restart.codebook},
               Path(out_dir) / f"rank{rank}.pt")  # fmt: skip
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
