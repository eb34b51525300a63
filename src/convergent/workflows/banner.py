"""What a run says when it starts: one line before anything slow, then the banner once the data
and the model are built (run directory, task, backbone with its parameter count, data with its
sizes, device, precision, strategy)."""

from convergent.config import FinetuneConfig, PretrainConfig
from convergent.data.protocol import Dataset
from convergent.rundir import RunDir
from convergent.tasks.base import Task
from convergent.training.loop import Trainer


def starting_line(verb: str, cfg: PretrainConfig | FinetuneConfig, run: RunDir, what: str) -> str:
    """``convergent pretrain: simmim / swinv2_micro on fashion-mnist -> runs/...``: printed first,
    before data and models load."""
    return f"convergent {verb}: {what} / {cfg.model.init or cfg.model.backbone} on {cfg.data.name} -> {run.root}"


def banner(task: Task, train_set: Dataset, test_set: Dataset | None, trainer: Trainer, cfg: PretrainConfig) -> str:
    """The run at a glance, one fact a line, each under 80 columns."""
    backbone = task.backbone
    params = sum(p.numel() for p in backbone.parameters())
    own = {id(p) for p in backbone.parameters()}  # a backbone may hold frozen ones (MoCo v3's patch projection)
    heads = sum(p.numel() for p in task.parameters() if p.requires_grad and id(p) not in own)
    fabric = trainer.fabric
    rows = [
        ("task", f"{task.name} ({heads:,} head parameters)" if heads > 0 else task.name),
        ("backbone", f"{cfg.model.init or cfg.model.backbone}: {type(backbone).__name__}, {params:,} parameters"),
        ("data", f"{cfg.data.name}: {_size(train_set)} train, {_size(test_set)} held out"),
        ("steps", f"{cfg.trainer.max_steps} x batch {cfg.data.batch_size}"),
        ("device", f"{fabric.device.type} x {fabric.world_size}, precision {cfg.trainer.precision}, "
                   f"strategy {cfg.trainer.strategy}"),
    ]  # fmt: skip
    return "\n".join(f"  {k:<9}{v}" for k, v in rows)


def _size(data: Dataset | None) -> str:
    if data is None:
        return "none"
    if data.streamed:
        return "a stream" if data.num_samples is None else f"a stream of {data.num_samples:,}"
    return f"{len(data):,}"
