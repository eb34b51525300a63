"""Task registry and the run's task section, in one table (torch-free): each registered task is
one field of :class:`TaskConfig`, declared with :func:`task`, so ``convergent list`` and the
CLI answer without importing torch and adding an objective adds its options.

    simmim: SimMIMConfig = task("simmim", "convergent.tasks.simmim:SimMIM", SimMIMConfig, "SimMIM ...")

``build_task(name, backbone, config)`` imports the task class only then.
"""

from dataclasses import dataclass, field, fields
from typing import Any

from convergent.registry import Registry, load_target
from convergent.tasks.configs import (
    BEiTConfig,
    CaptionConfig,
    CausalLMConfig,
    ClassifyConfig,
    CLIPConfig,
    Data2VecConfig,
    FDConfig,
    MAEConfig,
    MLMConfig,
    MoCoV3Config,
    SimCLRConfig,
    SimCSEConfig,
    SimMIMConfig,
    TextToImageConfig,
    ViLTConfig,
    VQVAEConfig,
)


@dataclass(frozen=True)
class TaskEntry:
    name: str
    target: str
    """``"module:Class"`` of the task (an ``nn.Module``)."""
    config: type
    """The task's config dataclass."""
    description: str


def task(name: str, target: str, config: type, description: str) -> Any:
    """A :class:`TaskConfig` field that registers task ``name`` (its section defaults to
    ``config()``); the field is named :func:`task_field` of ``name``."""
    return field(default_factory=config, metadata={"task": TaskEntry(name, target, config, description)})


def task_field(name: str) -> str:
    """Attribute of :class:`TaskConfig` holding task ``name``'s config (``causal-lm`` → ``causal_lm``)."""
    return name.replace("-", "_")


@dataclass
class TaskConfig:
    """The objective of a run: ``name`` picks a registered task; each task's section holds its
    options (only the named one is used)."""

    name: str = "simmim"
    """Registered task (``convergent list tasks``)."""
    simmim: SimMIMConfig = task("simmim", "convergent.tasks.simmim:SimMIM", SimMIMConfig, "SimMIM: masked image modelling, L1 on masked pixels")
    """Options of the ``simmim`` task."""
    mae: MAEConfig = task("mae", "convergent.tasks.mae:MAE", MAEConfig, "MAE: encode visible patches, decode, MSE on masked patches")
    """Options of the ``mae`` task."""
    classify: ClassifyConfig = task("classify", "convergent.tasks.classify:Classify", ClassifyConfig, "Classify: supervised fine-tuning, pooled tokens + linear head, label-smoothed cross-entropy")
    """Options of the ``classify`` task."""
    mlm: MLMConfig = task("mlm", "convergent.tasks.mlm:MLM", MLMConfig, "MLM: BERT masked language modelling (15 % of tokens, 80/10/10), cross-entropy on masked tokens")
    """Options of the ``mlm`` task."""
    causal_lm: CausalLMConfig = task("causal-lm", "convergent.tasks.causal_lm:CausalLM", CausalLMConfig, "Causal LM: GPT-style next-token prediction with a causal text backbone")
    """Options of the ``causal-lm`` task."""
    data2vec: Data2VecConfig = task("data2vec", "convergent.tasks.data2vec:Data2Vec", Data2VecConfig, "data2vec: regress an EMA teacher's averaged top-K block outputs at masked positions (text, ViT, Swin)")
    """Options of the ``data2vec`` task."""
    mocov3: MoCoV3Config = task("mocov3", "convergent.tasks.mocov3:MoCoV3", MoCoV3Config, "MoCo v3: two views, query encoder + predictor vs an EMA momentum encoder, symmetric InfoNCE (image backbones)")
    """Options of the ``mocov3`` task."""
    simclr: SimCLRConfig = task("simclr", "convergent.tasks.simclr:SimCLR", SimCLRConfig, "SimCLR: two augmented views, projector MLP, NT-Xent over the global batch (image backbones)")
    """Options of the ``simclr`` task."""
    simcse: SimCSEConfig = task("simcse", "convergent.tasks.simclr:SimCSE", SimCSEConfig, "SimCSE: each text encoded twice with dropout as the only noise, [CLS] + tanh MLP, InfoNCE over the global batch (text backbones)")
    """Options of the ``simcse`` task."""
    clip: CLIPConfig = task("clip", "convergent.tasks.clip:CLIP", CLIPConfig, "CLIP: image and text towers projected into one space, symmetric InfoNCE over the global batch of pairs (loss: sigmoid for SigLIP)")
    """Options of the ``clip`` task."""
    fd: FDConfig = task("fd", "convergent.tasks.fd:FD", FDConfig, "FD: feature distillation, a 1x1 projection of the student's token map regresses a frozen teacher's whitened token map (Smooth L1; image backbones)")
    """Options of the ``fd`` task."""
    vilt: ViLTConfig = task("vilt", "convergent.tasks.vilt:ViLT", ViLTConfig, "ViLT: one Transformer over [text ; image patches], image-text matching with swapped images + MLM conditioned on the image")
    """Options of the ``vilt`` task."""
    vqvae: VQVAEConfig = task("vqvae", "convergent.tasks.vqvae:VQVAE", VQVAEConfig, "VQ-VAE: an image tokenizer, the encoder's token map quantised to its nearest codes (EMA codebook), a conv decoder reconstructs the image (MSE + commitment)")
    """Options of the ``vqvae`` task."""
    beit: BEiTConfig = task("beit", "convergent.tasks.beit:BEiT", BEiTConfig, "BEiT: blocks of patches hidden behind the mask token, predict the visual-token id of each (a vqvae run's tokenizer), cross-entropy over the codebook")
    """Options of the ``beit`` task."""
    text_to_image: TextToImageConfig = task("text-to-image", "convergent.tasks.text_to_image:TextToImage", TextToImageConfig, "Text-to-image (DALL-E): a causal text Transformer over [caption ; visual tokens of a vqvae run], next-token loss on both; sampled by convergent generate")
    """Options of the ``text-to-image`` task."""
    caption: CaptionConfig = task("caption", "convergent.tasks.caption:Caption", CaptionConfig, "Captioning: image backbone encoder + causal text decoder with cross-attention (BertLMHeadModel), teacher-forced next-token loss; greedy / beam search")
    """Options of the ``caption`` task."""

    def selected(self) -> Any:
        """The config section of the task named by ``name``."""
        entry(self.name)  # unknown names: a KeyError with close matches
        return getattr(self, task_field(self.name))  # a declared field of this class


def _register() -> Registry[TaskEntry]:
    tasks: Registry[TaskEntry] = Registry("task")
    for f in fields(TaskConfig):
        if "task" in f.metadata:
            e = f.metadata["task"]
            if f.name != task_field(e.name):
                raise ValueError(f"TaskConfig.{f.name} registers task {e.name!r}; name the field {task_field(e.name)!r}")
            tasks.add(e.name, e)
    return tasks


_TASKS = _register()


def names() -> list[str]:
    """Registered task names, sorted."""
    return _TASKS.names()


def entry(name: str) -> TaskEntry:
    """The registry entry of ``name``; KeyError with close matches if unknown."""
    return _TASKS.get(name)


def describe(name: str) -> str:
    return entry(name).description


def task_class(name: str) -> type:
    """The class of task ``name`` (imports it, and torch)."""
    return load_target(entry(name).target)


def build_task(name: str, backbone: Any, config: Any = None, **inputs: Any):
    """The task ``name`` around ``backbone`` (config: its dataclass; default values if None);
    ``inputs``: what the task's constructor takes besides (a distillation teacher: ``teacher``,
    ``renormalize``, see :class:`~convergent.tasks.configs.TeacherConfig`)."""
    e = entry(name)
    return load_target(e.target)(backbone, config if config is not None else e.config(), **inputs)
