"""The embedder of a path: an ONNX export runs on onnxruntime (torch is never imported, so a
deployment needs no training stack); a run or an encoder directory runs on PyTorch."""

from pathlib import Path

from convergent.app.errors import AppError
from convergent.app.model import Embedder
from convergent.app.onnx_model import OnnxEmbedder, is_export


def load_embedder(path: str | Path, threads: int | None = None) -> Embedder:
    """:class:`OnnxEmbedder` for an export directory (``onnx.json``), else the PyTorch embedder of
    a run or encoder directory (:func:`convergent.app.torch_model.load_torch`). ``threads``: the
    model's CPU threads (None: the runtime's default, one per core; for PyTorch this sets the
    process's count). On a machine busy with other work, 1 thread answers single queries far
    faster: threads that wait for a core cost a scheduler slice per operation."""
    path = Path(path).expanduser()
    if not path.exists():
        raise AppError(f"{path}: no such model (a run, an encoder directory or an ONNX export)")
    if is_export(path):
        return OnnxEmbedder(path, threads)
    from convergent.app.torch_model import load_torch  # torch only for a PyTorch model

    return load_torch(path, threads)
