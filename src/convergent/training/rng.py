"""Random-number-generator state as plain tensors (so ``torch.load(weights_only=True)``
reads it back): torch (CPU and CUDA), numpy, python ``random`` and an optional extra
``torch.Generator`` (the loop's augmentation generator)."""

import hashlib
import random

import numpy as np
import torch
import torch.distributed


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed mixed from ``seed`` and ``keys`` (e.g. rank, epoch); stable across runs."""
    digest = hashlib.sha256(repr((int(seed),) + tuple(int(k) for k in keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)


def seed_rng(seed: int) -> None:
    """Seed torch (all devices), numpy and python ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def capture_rng(generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """This process's generator states, each a CPU tensor."""
    _, py_state, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_gauss": torch.tensor([py_gauss is not None, py_gauss or 0.0], dtype=torch.float64),
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_extra": torch.tensor([np_pos, np_has_gauss, np_gauss], dtype=torch.float64),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"].cpu())
    has_gauss, gauss = state["python_gauss"].tolist()
    random.setstate((3, tuple(int(x) for x in state["python"].tolist()), gauss if has_gauss else None))
    pos, np_has_gauss, np_gauss = state["numpy_extra"].tolist()
    keys = state["numpy"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(pos), int(np_has_gauss), float(np_gauss)))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(state["cuda"].cpu()))
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"].cpu())


def gather_rng(fabric, generator: torch.Generator | None = None) -> list[dict[str, torch.Tensor]]:
    """Every process's :func:`capture_rng`, indexed by global rank (a collective: call it
    on all processes)."""
    local = capture_rng(generator)
    if fabric.world_size == 1:
        return [local]
    gathered = [{} for _ in range(fabric.world_size)]
    for key, value in local.items():
        value = value.to(fabric.device)  # NCCL gathers device tensors only
        parts = [torch.empty_like(value) for _ in range(fabric.world_size)]
        torch.distributed.all_gather(parts, value)
        for rank, part in enumerate(parts):
            gathered[rank][key] = part.cpu()
    return gathered
