"""Image search on a trained model: index a folder (FAISS vectors + SQLite metadata), search it
by text or by image, serve it on a small web page, export the towers to ONNX.

    convergent index RUN --images photos/ --out photos.index     # incremental on a second run
    convergent search photos.index "a red heart" -k 5
    convergent serve photos.index                                 # http://127.0.0.1:8000
    convergent export RUN --format onnx --out RUN/onnx            # then: --model RUN/onnx

Modules, one job each: :mod:`~convergent.app.model` (what a model is to the index: its
:class:`ModelInfo` and the :class:`Embedder` contract), :mod:`~convergent.app.torch_model` and
:mod:`~convergent.app.onnx_model` (the two embedders), :mod:`~convergent.app.load` (pick one),
:mod:`~convergent.app.files` (scan a folder), :mod:`~convergent.app.vectors` (the FAISS part),
:mod:`~convergent.app.store` (an index directory, written by generations), :mod:`~convergent.app.indexer`
(incremental update), :mod:`~convergent.app.searcher`, :mod:`~convergent.app.server`,
:mod:`~convergent.app.export`.

Needs the ``app`` extra (``pip install convergent[app]``: faiss-cpu, fastapi, uvicorn, onnx,
onnxruntime, python-multipart). Nothing outside this package imports it at module level, so the
core library and ``convergent list`` run without those packages. Everything but
:mod:`~convergent.app.torch_model` and :mod:`~convergent.app.export` is torch-free: an index is
searched and served from ONNX files with onnxruntime alone.
"""
