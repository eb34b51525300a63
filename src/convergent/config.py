"""Typed run configuration (torch-free). The CLI (jsonargparse) is generated from these
ordinary dataclasses (:class:`PretrainConfig`, :class:`FinetuneConfig`,
:class:`EvalRunConfig`; the task section is :class:`~convergent.tasks.registry.TaskConfig`,
one field per registered task). Their defaults are the shared defaults of every preset (a
small run on 32-px images on a CPU); presets in ``convergent/configs/*.yaml`` change only what
differs, and mean the same from the CLI and from Python. Every value is checked before a run
starts by :mod:`convergent.validate` (types from these annotations, ranges and choices in its
``RULES``): a field added here is type-checked there at once; give it a rule there too."""

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from convergent.tasks.configs import ClassifyConfig
from convergent.tasks.registry import TaskConfig


@dataclass
class DataConfig:
    """Where the data comes from; how images are augmented and texts tokenised."""

    name: str = "fashion-mnist"
    """Registered dataset (``convergent list datasets``): fashion-mnist, image-folder, ..."""
    root: str | None = None
    """Directory with the data (None: the dataset's default location or bundled subset)."""
    img_size: int = 32
    """Side of the square images fed to the model."""
    in_chans: int = 3
    """Channels fed to the model (grayscale is repeated to 3)."""
    batch_size: int = 128
    """Global batch size (split across processes)."""
    num_workers: int = 0
    """DataLoader worker processes (decoding only; augmentation runs batched in the main process)."""
    scale: tuple[float, float] = (0.67, 1.0)
    """Random-resized-crop area range (training)."""
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    """Random-resized-crop aspect-ratio range (training)."""
    hflip: float = 0.5
    """Probability of a horizontal flip (training)."""
    color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    """Colour jitter strengths (training): brightness, contrast, saturation (each >= 0; factor
    ~ U[max(0, 1-s), 1+s]) and hue (in [0, 0.5]; shift ~ U[-h, h]), torchvision's ``ColorJitter``,
    in a random order per image (0: that op is off). MoCo v3 / BYOL: [0.4, 0.4, 0.2, 0.1]."""
    color_jitter_prob: tuple[float, ...] = (0.0,)
    """Probability of applying the colour jitter, per view (element v for view v, the last for
    further views; training). MoCo v3 / BYOL: [0.8]."""
    grayscale_prob: tuple[float, ...] = (0.0,)
    """Probability of converting an image to grayscale, per view (training). MoCo v3 / BYOL: [0.2]."""
    blur_prob: tuple[float, ...] = (0.0,)
    """Probability of a Gaussian blur, per view (training; kernel 10 % of the image side, odd).
    MoCo v3 / BYOL: [1.0, 0.1]."""
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    """Range of the Gaussian blur's sigma in pixels (uniform; training)."""
    solarize_prob: tuple[float, ...] = (0.0,)
    """Probability of solarizing (values >= 128 of 255 inverted), per view (training). MoCo v3 /
    BYOL: [0.0, 0.2]."""
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    """Per-channel normalisation mean."""
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    """Per-channel normalisation std."""
    limit: int | None = None
    """Use at most this many training samples (None: all)."""
    max_image_pixels: int | None = 64 * 1024 * 1024
    """Skip images whose header declares more pixels (width × height) than this, as "too large",
    before decoding them (None: no cap but Pillow's). The default, 64 Mi pixels (8192 × 8192),
    equals ``convergent.data.limits.MAX_IMAGE_PIXELS``: every camera photo passes, one such image
    is 192 MiB as RGB, and it is below Pillow's decompression-bomb warning (89.5 megapixels)."""
    verify: bool = False
    """Image datasets read from files (image-folder, image-text-pairs): open and decode every image
    once when the dataset is built, dropping and counting the unreadable ones before training
    (False: they are found, skipped and counted when a step reads them)."""
    tokenizer: str | None = None
    """Text data: a trained tokenizer (directory or tokenizer.json); None trains one on the
    training split at the start of the run and saves it in the run directory."""
    tokenizer_kind: str = "wordpiece"
    """Text data: kind of tokenizer trained when none is given: wordpiece (BERT) or bpe (GPT)."""
    vocab_size: int = 8192
    """Text data: vocabulary of a tokenizer trained at the start of a run."""
    max_length: int = 64
    """Text data: tokens per sample, special tokens included (longer texts are truncated)."""
    pack: bool = False
    """Text pre-training: pack the training texts into blocks of ``max_length`` tokens (no
    padding; documents separated by [SEP]/eos), written once to ``RUN_DIR/packed-train.bin``."""


@dataclass
class ModelConfig:
    """The backbone: a registered variant plus field overrides."""

    backbone: str = "swinv2_micro"
    """Registered backbone (``convergent list backbones``)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Backbone config fields to change, e.g. ``{img_size: 32, window_size: 4}``."""
    init: str | None = None
    """Directory written by ``save_pretrained`` to start from (None: random init)."""


@dataclass
class OptimConfig:
    """AdamW with parameter groups, cosine schedule with warm-up."""

    lr: float = 1e-3
    """Peak learning rate (for the global batch size)."""
    min_lr: float = 1e-5
    """Final learning rate of the cosine schedule."""
    weight_decay: float = 0.05
    """Decoupled weight decay (not applied where the model declares no_weight_decay)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_steps: int = 50
    """Linear warm-up steps."""
    layer_decay: float = 1.0
    """Layer-wise learning-rate decay (1.0: none; fine-tuning uses e.g. 0.75)."""
    clip_grad: float | None = 5.0
    """Clip the global gradient norm to this value (None: no clipping)."""
    accumulate: int = 1
    """Gradient accumulation steps per optimizer step."""


@dataclass
class TrainerConfig:
    """How and where the run executes (Lightning Fabric)."""

    max_steps: int = 400
    """Optimizer steps to train."""
    accelerator: str = "auto"
    """cpu, cuda, or auto."""
    devices: int | str = 1
    """Devices (processes) per node."""
    num_nodes: int = 1
    """Nodes."""
    strategy: str = "auto"
    """auto, ddp, fsdp."""
    precision: str = "32-true"
    """Fabric precision: 32-true, bf16-mixed, 16-mixed."""
    seed: int = 0
    """Seed for weights, data order, augmentation and masks."""
    compile: bool | str = "auto"
    """Run the train step under torch.compile: true, false, or 'auto' (compile where it was
    measured to pay: one fp32 process on a CPU with the oneDNN matmul route, an image backbone,
    a run estimated at 1 h or more eagerly; see ``convergent.training.compiling``). Recorded in
    checkpoints; a resume takes the recorded choice."""
    flush_denormals: bool = True
    """Treat subnormal floats (below 1.2e-38 in fp32) as zero in CPU arithmetic, set when the run
    starts (``convergent.training.numerics.flush_denormals``): x86 cores compute on them through a
    slow path (Swin's shift mask made them; the attention now zeroes those itself).
    Changes values only below 1.2e-38; whether it took is recorded in the checkpoints."""
    log_every: int = 10
    """Steps between metric log lines."""
    checkpoint_every: int = 200
    """Steps between checkpoints (and at the end)."""
    visualize_every: int = 0
    """Steps between reconstruction pictures (0: only at the end)."""
    nonfinite: str = "skip"
    """On a non-finite loss: 'skip' the step (counted) or 'stop' the run (status failed)."""
    max_nonfinite_consecutive: int = 5
    """With 'skip': halt the run as diverged (status failed) after this many non-finite steps in a row (0: no limit)."""
    max_nonfinite_fraction: float = 0.25
    """With 'skip': halt the run as diverged when more than this fraction of its steps so far were non-finite,
    from step ``nonfinite_min_steps`` on (1.0: no limit)."""
    nonfinite_min_steps: int = 10
    """Steps before ``max_nonfinite_fraction`` applies (early on one bad step is a large fraction)."""
    out_dir: str = "runs"
    """Parent directory of run directories."""
    run_name: str | None = None
    """Run directory name (None: task-backbone-timestamp)."""


@dataclass
class EvalConfig:
    """Evaluation of the pre-trained encoder on frozen features."""

    knn: bool = True
    """Run the kNN classifier."""
    knn_k: int = 20
    """Neighbours."""
    knn_temperature: float = 0.07
    """Temperature of the weighted vote."""
    linear_probe: bool = True
    """Train a linear classifier on frozen features."""
    probe_epochs: int = 20
    """Linear-probe epochs."""
    probe_lr: float = 1e-2
    """Linear-probe learning rate."""
    layer: int = -1
    """Block whose output is probed (-1: final normalised tokens)."""
    pooling: str = "avg"
    """How tokens become one vector: 'cls' | 'avg' | 'eos' | 'default', as ``ClassifyConfig.pooling``."""
    limit_train: int | None = 10000
    """At most this many labelled training samples for the probes (None: all); the default
    keeps the end-of-run evaluation to seconds on a CPU."""


@dataclass
class PretrainConfig:
    """Everything one ``convergent pretrain`` run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    """Training data, augmentation and tokenisation."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The backbone."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """The objective."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Devices, steps, checkpoints, output."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation of the encoder at the end of the run."""


@dataclass
class FinetuneConfig:
    """A classification fine-tuning run (``convergent finetune``)."""

    data: DataConfig = field(default_factory=DataConfig)
    """Labelled training and test data."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The backbone (``model.init``: a pre-trained encoder)."""
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    """The classification head and loss."""
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(layer_decay=0.75))
    """Optimizer and schedule (layer decay 0.75, as MAE / SimMIM fine-tuning)."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Devices, steps, checkpoints, output."""


@dataclass
class EvalRunConfig:
    """Frozen-feature evaluation of a saved encoder (``convergent eval``)."""

    data: DataConfig = field(default_factory=DataConfig)
    """Labelled data whose features are evaluated."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Which evaluations and their settings."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Device and precision of the feature pass."""


SWEEP_DOWNSTREAM = ("knn", "linear-probe", "finetune", "none")
"""What a sweep scores each point by downstream (``SweepDownstreamConfig.kind``)."""
SWEEP_DATA_AXES = ("seen", "distinct")
"""The D of a sweep's fit L(N, D) (``SweepConfig.fit_data``)."""


@dataclass
class SweepGridConfig:
    """The points of a scaling sweep: every variant x data fraction x step budget."""

    variants: tuple[str, ...] = ("swinv2_micro",)
    """Registered backbones (``convergent list backbones``) of one family, e.g. a ladder of sizes."""
    fractions: tuple[float, ...] = (1.0,)
    """Shares of the training split, each in (0, 1]: a point trains on the first ``fraction`` of
    it (``data.limit``; Fashion-MNIST's files are shuffled, so a prefix is close to class-balanced)."""
    steps: tuple[int, ...] = (100,)
    """Step budgets (>= 1). One run per variant x fraction trains to the largest; its validation
    loss (and downstream score) is measured as it passes each budget (one cosine schedule over
    the largest budget, so a smaller budget's loss is taken mid-schedule)."""


@dataclass
class SweepDownstreamConfig:
    """The downstream score recorded with each point of a sweep."""

    kind: str = "knn"
    """'knn' or 'linear-probe' (frozen features of the encoder at that budget, with the base
    config's ``eval.*`` settings, on the whole labelled training split), 'finetune' (a short
    fine-tuning of that encoder, top-1 test accuracy) or 'none'."""
    finetune_steps: int = 100
    """finetune: optimizer steps."""
    finetune_labels: int | None = 1000
    """finetune: labelled training samples (the first of the training split; None: all)."""
    finetune_batch_size: int = 64
    """finetune: batch size."""
    finetune_lr: float = 1e-3
    """finetune: peak learning rate."""
    finetune_layer_decay: float = 0.75
    """finetune: layer-wise learning-rate decay."""


@dataclass
class SweepConfig:
    """A scaling sweep (``convergent sweep``): pre-training runs of a preset over a grid of model
    sizes, data fractions and step budgets, each point's held-out loss and downstream score, and
    the fit L(N, D) = E + A / N^alpha + B / D^beta."""

    preset: str = "simmim-swinv2-fmnist"
    """The run every point starts from: a bundled preset (``convergent pretrain --preset``) or a
    YAML file of pretrain options."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted pretrain options changed for every point, e.g. ``{data.batch_size: 64}``; the grid
    then sets ``model.backbone``, ``data.limit``, ``trainer.max_steps`` and ``trainer.seed``."""
    grid: SweepGridConfig = field(default_factory=SweepGridConfig)
    """Variants x fractions x step budgets."""
    downstream: SweepDownstreamConfig = field(default_factory=SweepDownstreamConfig)
    """The downstream score of each point."""
    out: str = "sweeps/sweep"
    """Output directory: ``runs/``, ``points/`` (one JSON per finished point), ``results.json``,
    ``fit.json``, ``scaling.png``."""
    seed: int = 0
    """Seed of every point's training (``trainer.seed``) and of the held-out masks."""
    val_samples: int | None = 1000
    """Held-out samples: the first of the test split (None: all). The validation loss is measured
    on them, and they are the probes' test set (the probes train on at most ``eval.limit_train``
    samples of the whole training split)."""
    val_batch_size: int = 250
    """Batch size of the validation loss (fixed: the masks drawn depend on it)."""
    fit_data: str = "seen"
    """D of the fit: 'seen' (samples seen, batch x steps) or 'distinct' (the fraction's distinct samples)."""


RunConfig = PretrainConfig | FinetuneConfig | EvalRunConfig
"""The config of any run (each has ``data`` and ``trainer``)."""

__all__ = [
    "DataConfig", "EvalConfig", "EvalRunConfig", "FinetuneConfig", "ModelConfig", "OptimConfig", "PretrainConfig",
    "RunConfig", "SweepConfig", "SweepDownstreamConfig", "SweepGridConfig", "TaskConfig", "TrainerConfig",
    "from_dict", "from_namespace", "to_dict", "with_overrides",
]  # fmt: skip


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a (nested) dict; unknown keys are an error naming ``where``."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; expected some of {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        ftype = known[name].type
        if dataclasses.is_dataclass(ftype) and isinstance(value, dict):
            value = from_dict(ftype, value, f"{where}.{name}")
        elif isinstance(value, list) and "tuple" in str(ftype):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists) of a config dataclass, for YAML."""

    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def from_namespace(cls: type, namespace: Any, where: str) -> Any:
    """Dataclass ``cls`` from a parsed CLI namespace; keys that are not its fields (``--config``,
    ``--resume``, ...) are left out."""
    data = dict(namespace) if isinstance(namespace, dict) else namespace.as_dict()  # a jsonargparse Namespace
    keep = {f.name for f in dataclasses.fields(cls)}
    return from_dict(cls, {k: v for k, v in data.items() if k in keep}, where)


def with_overrides(cfg: Any, dotted: dict[str, Any], where: str = "overrides") -> Any:
    """A copy of the config dataclass ``cfg`` with dotted keys set (``{"task.simmim.mask_ratio":
    0.5, "model.overrides.window_size": 8}``); an unknown key is an error naming ``where``."""
    data = to_dict(cfg)
    for key, value in dotted.items():
        node, parts = data, str(key).split(".")
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                raise ValueError(f"{where}: {key}: {'.'.join(parts[: i + 1])} is not a section of options")
            node = node[part]
        node[parts[-1]] = value
    return from_dict(type(cfg), data, where)
