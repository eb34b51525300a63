"""Weight initialisation shared by the backbones and heads."""

from torch import nn


def init_linear_norm_(module: nn.Module, std: float = 0.02, truncated: bool = True) -> None:
    """For ``module.apply``: Linear weights ~ (truncated) normal(0, std) and zero biases;
    LayerNorm at identity. timm/MAE/Swin use the truncated normal, BERT the plain one."""
    if isinstance(module, nn.Linear):
        (nn.init.trunc_normal_ if truncated else nn.init.normal_)(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_xavier_linear_norm_(module: nn.Module) -> None:
    """For ``module.apply``: Linear weights Xavier-uniform and zero biases; LayerNorm at identity
    (MAE ``models_mae.py``, following the JAX ViT)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
