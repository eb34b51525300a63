"""Activation memory of one forward pass, ours against HF: the bytes of the distinct tensors
autograd saves for the backward (parameters excluded), counted with
``torch.autograd.graph.saved_tensors_hooks``. Unlike the peak RSS of the other benchmarks, this
is exact and free of allocator noise; it leaves out the backward's temporaries.

    python benchmarks/saved_activations.py --case simmim --batch 8
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretraining import CASES  # noqa: E402


def saved_bytes(model: torch.nn.Module, loss_fn) -> tuple[int, int]:
    """(bytes, storages) of what ``loss_fn()``'s graph saves for the backward, parameters excluded."""
    sizes: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        sizes[storage.data_ptr()] = max(sizes.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    del loss
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {k: v for k, v in sizes.items() if k not in params}
    return sum(kept.values()), len(kept)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=sorted(CASES), default="simmim")
    p.add_argument("--batch", type=int, default=8)
    a = p.parse_args()
    torch.manual_seed(0)
    title, build = CASES[a.case]
    case = build(a.batch)
    for side, model, fn in (("ours", case.ours, case.loss_ours), ("HF", case.peer, case.loss_peer)):
        nbytes, count = saved_bytes(model, fn)
        print(f"{title}, batch {a.batch}, {side}: {nbytes / 2**20:.1f} MB saved for the backward in {count} tensors")


if __name__ == "__main__":
    main()
