"""The fine-tuning config built from a pre-training run's config (the claims suite and the
sweep's fine-tuning score both use it)."""

from convergent.commands.presets import preset_config
from convergent.workflows.finetune import finetune_config


def test_finetune_config_from_a_pretrain_config():
    pre = preset_config("simmim-swinv2-fmnist", {"trainer": {"seed": 3, "out_dir": "somewhere"}})
    cfg = finetune_config(pre, "runs/x/encoder", labels=100, steps=50, batch_size=32, lr=2e-3, layer_decay=0.6,
                          run_name="ft")  # fmt: skip
    assert cfg.model.backbone == pre.model.backbone and cfg.model.init == "runs/x/encoder"
    assert cfg.data.name == pre.data.name and cfg.data.limit == 100 and cfg.data.batch_size == 32
    assert (cfg.optim.lr, cfg.optim.layer_decay, cfg.optim.warmup_steps, cfg.optim.weight_decay) == (2e-3, 0.6, 5, 0.05)
    assert (cfg.trainer.max_steps, cfg.trainer.checkpoint_every, cfg.trainer.run_name) == (50, 50, "ft")
    assert cfg.trainer.seed == 3 and cfg.trainer.out_dir == "somewhere"
    assert finetune_config(pre, None, labels=10, steps=5, batch_size=32, lr=1e-3, layer_decay=0.75).data.limit == 32
    assert finetune_config(pre, None, labels=None, steps=5, batch_size=32, lr=1e-3, layer_decay=0.75).data.limit is None
