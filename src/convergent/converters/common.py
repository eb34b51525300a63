"""Shared pieces of the converters: prefix stripping, exhaustive key accounting and HF's
activation names."""

from collections.abc import Iterable

ACT_FROM_HF = {
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",  # the same tanh approximation written out by hand
    "gelu_python_tanh": "gelu_tanh",
    "relu": "relu",
}
"""HF ``hidden_act`` → convergent ``act`` (BERT, ViT; CLIP adds ``quick_gelu``)."""
ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
"""convergent ``act`` → the HF name written on export."""


def strip_prefix(state_dict: dict, prefixes: Iterable[str]) -> dict:
    """Drop the first of ``prefixes`` that every key starting with it shares (e.g. ``bert.``
    of ``BertForMaskedLM``); keys without it are kept as they are."""
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state_dict.items()}
    return dict(state_dict)


class KeyTracker:
    """Reads tensors from a source state dict and remembers which keys were used, so a
    conversion can fail with one message listing every key it did not understand."""

    def __init__(self, state_dict: dict, source: str, ignore: Iterable[str] = ()):
        self.sd = state_dict
        self.source = source
        self.ignore = tuple(ignore)
        self.used: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.sd

    def pop(self, key: str):
        if key not in self.sd:
            raise KeyError(f"{self.source}: expected key {key!r} is missing")
        self.used.add(key)
        return self.sd[key]

    def get(self, key: str, default=None):
        if key in self.sd:
            return self.pop(key)
        return default

    def skip(self, key: str) -> None:
        """Mark a known, deliberately unused key (e.g. a buffer the target rebuilds)."""
        self.used.add(key)

    def ignored(self) -> list[str]:
        """Keys left over that match an ``ignore`` prefix (reported, not converted)."""
        return sorted(k for k in self.sd if k not in self.used and k.startswith(self.ignore))

    def finish(self) -> None:
        left = sorted(k for k in self.sd if k not in self.used and not k.startswith(self.ignore))
        if left:
            raise KeyError(f"{self.source}: {len(left)} keys were not understood: {left}")


def has_pooler(state_dict: dict) -> bool:
    """Whether a HF checkpoint holds a ``pooler.dense`` layer (HF configs do not record
    ``add_pooling_layer``)."""
    return any(k.split(".")[-3:-1] == ["pooler", "dense"] for k in state_dict)


def square_size(value, what: str) -> int:
    """A HF size that may be ``[h, w]`` as one int; convergent's image backbones are square."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"HF config: {what}={list(value)} is not square; convergent needs h == w")
        value = value[0]
    return int(value)
