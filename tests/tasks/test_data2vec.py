"""data2vec: the teacher gets no gradient and follows the hand-written EMA and momentum
schedule; targets equal a hand-computed top-K average (padded text, ViT, Swin); the same task
class trains text, ViT and Swin; the state dict restores the teacher; clear errors; mask
generators and the contract's mask mapping. The regression loss against a reference:
``tests/losses/test_regression.py``."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from convergent.backbones import ViTConfig, build_backbone
from convergent.backbones.vit import VisionTransformer
from convergent.tasks.configs import Data2VecConfig
from convergent.tasks.data2vec import Data2Vec, normalize, real_positions
from convergent.tasks.registry import build_task
from convergent.tasks.teacher import linear_momentum
from convergent.training.callbacks import Callback
from convergent.training.checkpoint import weights_for_saving
from convergent.training.loop import Trainer
from convergent.training.optim import param_groups
from tests.task_helpers import train_steps
from tests.training_helpers import SyntheticImages, configs, random_transform, read_metrics

DROP = {"text_test": {}} | {n: {"drop_path": 0.0} for n in ("vit_test", "swin_test", "swinv2_test")}


def text_batch(b: int = 3, length: int = 12) -> dict:
    """Random tokens, row 1 padded after 7 tokens, row 2 after 4; position 0 is special."""
    ids = torch.randint(5, 1000, (b, length))
    attn = torch.ones(b, length, dtype=torch.long)
    attn[1, 7:] = 0
    attn[2, 4:] = 0
    ids[attn == 0] = 0  # the pad id
    special = torch.zeros(b, length, dtype=torch.long)
    special[:, 0] = 1
    return {"input_ids": ids, "attention_mask": attn, "special_tokens_mask": special}


def image_batch(b: int = 2) -> dict:
    # smooth images: something the student can learn to predict from context
    return {"image": F.interpolate(torch.randn(b, 3, 4, 4), size=(32, 32), mode="bilinear")}


def make(name: str, **cfg) -> Data2Vec:
    return Data2Vec(build_backbone(name, **DROP[name]), Data2VecConfig(**cfg))


def batch_for(name: str) -> dict:
    return text_batch() if name == "text_test" else image_batch()


def fixed_mask(task: Data2Vec, batch: dict) -> dict:
    x = batch[task.backbone.input_key]
    return {**batch, "mask": task.draw_mask(batch, x, task.backbone.mask_grid(x))}


# --- teacher ----------------------------------------------------------------------------------


def test_teacher_gets_no_gradient_and_stays_in_eval():
    task = make("text_test").train()
    assert not task.teacher.training and task.backbone.training
    assert all(not p.requires_grad for p in task.teacher.parameters())
    task(text_batch())["loss"].backward()
    assert all(p.grad is None for p in task.teacher.parameters())
    assert all(p.grad is not None for p in task.head.parameters())  # text: fairseq's two-layer head
    assert task.backbone.blocks[-1].mlp.fc2.weight.grad.abs().sum() > 0
    assert task.backbone.mask_token.grad.abs().sum() > 0  # the student saw mask tokens
    # the optimizer leaves the teacher out
    trained = {id(p) for g in param_groups(task, 1e-3, 0.05) for p in g["params"]}
    assert not any(id(p) in trained for p in task.teacher.parameters())
    assert all(id(p) in trained for p in task.backbone.parameters())


def test_ema_update_matches_reference_and_schedule():
    task = make("vit_test", ema_decay=0.99, ema_end_decay=0.999, ema_anneal_end_step=10)
    with torch.no_grad():
        for p in task.backbone.parameters():
            p.add_(torch.randn_like(p))  # the student moved away from the teacher
    before = {n: p.clone() for n, p in task.teacher.named_parameters()}
    student = dict(task.backbone.named_parameters())
    task.on_step_end(4, 100)
    m = 0.999 - (0.999 - 0.99) * (1 - 4 / 10)
    for n, p in task.teacher.named_parameters():
        torch.testing.assert_close(p, m * before[n] + (1 - m) * student[n], rtol=0, atol=1e-6)
    assert task.ema_decay.item() == pytest.approx(m)
    assert task(image_batch())["ema_decay"].item() == pytest.approx(m)
    # schedule: linear from tau_0 to tau_e over tau_n steps, then constant
    assert linear_momentum(0, 10, 0.99, 0.999) == pytest.approx(0.99)
    assert linear_momentum(5, 10, 0.99, 0.999) == pytest.approx(0.9945)
    assert linear_momentum(10, 10, 0.99, 0.999) == pytest.approx(0.999)
    assert linear_momentum(50, 10, 0.99, 0.999) == pytest.approx(0.999)
    # defaults: text 0.999 -> 0.9999 over 30 % of the run (fairseq: 300k of 1M updates); vision a
    # constant 0.9998 (data2vec_vision's ViT-B command)
    task = make("text_test")
    assert task(text_batch())["ema_decay"].item() == pytest.approx(0.999)
    task.on_step_end(15, 100)
    assert task.ema_decay.item() == pytest.approx(0.99945)
    task.on_step_end(30, 100)
    assert task.ema_decay.item() == pytest.approx(0.9999)
    task = make("vit_test")
    for step in (0, 50, 100):
        task.on_step_end(step, 100)
        assert task.ema_decay.item() == pytest.approx(0.9998)
    # explicit values: the old global schedule (anneal end None, vision: the run's max_steps)
    task = make("vit_test", ema_decay=0.999, ema_end_decay=0.9999)
    task.on_step_end(50, 100)
    assert task.ema_decay.item() == pytest.approx(0.99945)


# --- targets ----------------------------------------------------------------------------------


def by_hand_instance_norm(x: torch.Tensor, length: int) -> torch.Tensor:
    """``F.instance_norm`` of one sample's first ``length`` tokens ``(L, D)``."""
    return F.instance_norm(x[None, :length].transpose(1, 2)).transpose(1, 2)[0]


@pytest.mark.parametrize("name", ["text_test", "vit_test", "swinv2_test"])
def test_targets_equal_hand_computed_top_k_average(name):
    task = make(name, target_layer="block", target_norm="instance", final_norm="layer", top_k_layers=2).eval()
    with torch.no_grad():
        for p in task.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))  # a teacher unlike the student
    batch = batch_for(name)
    x = batch[task.backbone.input_key]
    kwargs = {"attention_mask": batch["attention_mask"]} if name == "text_test" else {}
    grid = task.backbone.mask_grid(x)
    valid = ~task.backbone.output_mask(~real_positions(batch, x, grid), grid)
    got = task.targets(x, kwargs, valid)

    _, blocks = task.teacher.forward_intermediates(x, indices=None, **kwargs)  # every block
    top = [b[:, task.num_prefix :] for b in blocks[-2:]]  # the last K=2, class token dropped
    lengths = valid.sum(1).tolist()
    for i, length in enumerate(lengths):
        ref = sum(by_hand_instance_norm(b[i], length) for b in top) / 2
        ref = F.layer_norm(ref, ref.shape[-1:])
        torch.testing.assert_close(got[i, :length], ref, rtol=1e-4, atol=1e-4)
    n_out = {"text_test": 12, "vit_test": 16, "swinv2_test": 16}[name]
    assert got.shape == (x.shape[0], n_out, task.backbone.num_features)


def test_instance_norm_ignores_padding():
    valid = text_batch()["attention_mask"].bool()
    # instance norm ignores padding: changing the pad tokens' outputs changes nothing real
    a = torch.randn(3, 12, 8)
    b = a.clone()
    b[~valid] = 100.0
    torch.testing.assert_close(normalize(a, "instance", valid)[valid], normalize(b, "instance", valid)[valid])
    torch.testing.assert_close(normalize(a, "instance"), F.instance_norm(a.transpose(1, 2)).transpose(1, 2))


# --- training ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["text_test", "vit_test", "swinv2_test", "swin_test"])
def test_same_task_trains_text_vit_and_swin(name):
    torch.manual_seed(0)
    task = build_task("data2vec", build_backbone(name, **DROP[name]), Data2VecConfig()).train()
    assert type(task) is Data2Vec
    batch = fixed_mask(task, batch_for(name))
    losses, out = train_steps(task, batch, 12, lr=5e-3)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.85 * losses[0], losses
    assert 0 < out["masked_fraction"].item() < 1 and out["target_var"].item() > 0.1
    assert set(out) == {"loss", "ema_decay", "target_var", "pred_var", "masked_fraction"}


def test_batch_keys_and_defaults_come_from_the_backbone():
    text, vit, swin = make("text_test"), make("vit_test"), make("swinv2_test")
    assert text.batch_keys == ("input_ids",)  # required; attention_mask and token_type_ids are read when present
    assert vit.batch_keys == swin.batch_keys == ("image",)
    assert (text.mask_kind, text.mask_ratio, text.loss_beta) == ("token", 0.15, 4.0)
    assert (vit.mask_kind, vit.mask_ratio, vit.loss_beta) == ("block", 0.6, 2.0)
    # K: the official share of final_stage_depth (text 10/12, vision 6/12), rounded, at least 1
    assert (text.top_k, vit.top_k) == (2, 1)
    assert (swin.mask_kind, swin.top_k) == ("patch", 1)  # half of the last stage's 2 blocks
    assert make("vit_test", mask_kind="patch", mask_ratio=0.5, loss_beta=0.0).mask_kind == "patch"


def test_state_dict_round_trip_restores_teacher():
    torch.manual_seed(0)
    task = make("vit_test").train()
    batch = fixed_mask(task, image_batch())
    train_steps(task, batch, 2, lr=1e-2, max_steps=10)
    assert not torch.equal(task.teacher.blocks[0].attn.qkv.weight, task.backbone.blocks[0].attn.qkv.weight)
    torch.manual_seed(1)
    again = make("vit_test")
    assert not torch.equal(again.teacher.blocks[0].attn.qkv.weight, task.teacher.blocks[0].attn.qkv.weight)
    again.load_state_dict(task.state_dict(), strict=True)
    for (n, a), (_, b) in zip(task.teacher.state_dict().items(), again.teacher.state_dict().items()):
        assert torch.equal(a, b), n
    assert again.ema_decay.item() == task.ema_decay.item()
    assert again(batch)["loss"].item() == task(batch)["loss"].item()


def test_checkpoint_weights_survive_safetensors(tmp_path):
    task = make("swinv2_test")
    task.on_step_end(3, 10)
    save_file(weights_for_saving(task), str(tmp_path / "w.safetensors"))
    again = make("swinv2_test")
    again.load_state_dict(load_file(str(tmp_path / "w.safetensors")), strict=True)
    assert again.ema_decay.item() == pytest.approx(0.9998)  # vision: constant
    assert any(k.startswith("teacher.") for k in task.state_dict())


class _Kill(Exception):
    pass


class _KillAfter(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, task, step, metrics):
        if step == self.step:
            raise _Kill(step)


def test_trainer_resume_is_exact_with_the_teacher(tmp_path):
    """Through the real training loop: killed after step 3 (checkpoint at 2), resumed to 6."""

    def fit(run_dir, **kw):
        trainer = Trainer(*configs(max_steps=6, checkpoint_every=2), run_dir, batch_size=8, progress=False)
        task = make("vit_test", ema_decay=0.9, ema_end_decay=0.99)  # a teacher that moves visibly
        trainer.fit(task, SyntheticImages(44), random_transform, **kw)
        return task

    straight = fit(tmp_path / "a")
    with pytest.raises(_Kill):
        fit(tmp_path / "b", callbacks=[_KillAfter(3)])
    resumed = fit(tmp_path / "b", resume=True)
    terms = ("loss", "ema_decay", "target_var", "masked_fraction")
    a, b = ([tuple(m[k] for k in terms) for m in read_metrics(tmp_path / r)] for r in ("a", "b"))
    assert len(a) == 6 and a == b
    assert a[0][1] == pytest.approx(0.9) and a[-1][1] == pytest.approx(linear_momentum(5, 6, 0.9, 0.99))
    for (name, x), (_, y) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(x, y), name


# --- errors -----------------------------------------------------------------------------------


class _NoMaskToken(VisionTransformer):
    supports_mask_token = False

    def __init__(self):
        super().__init__(ViTConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_dim=64))


def test_clear_errors():
    with pytest.raises(ValueError, match="data2vec.*needs a backbone with mask_token.*_NoMaskToken"):
        Data2Vec(_NoMaskToken(), Data2VecConfig())
    with pytest.raises(ValueError, match="mask_kind must be 'auto' or one of"):
        make("vit_test", mask_kind="random")
    with pytest.raises(ValueError, match="target_norm must be one of"):
        make("vit_test", target_norm="batch")
    with pytest.raises(ValueError, match=r"top_k_layers=3.*2 blocks at its final resolution.*use 1\.\.2"):
        make("swinv2_test", top_k_layers=3)
    with pytest.raises(ValueError, match="mask_ratio must be in"):
        make("vit_test", mask_ratio=0.0)
    with pytest.raises(ValueError, match="ema_decay <= ema_end_decay"):
        make("vit_test", ema_decay=0.9999, ema_end_decay=0.99)
    with pytest.raises(ValueError, match="'block' needs a 2-d mask grid"):
        make("text_test", mask_kind="block")(text_batch())
    task = make("vit_test")
    with pytest.raises(ValueError, match=r"batch\['mask'\] must be \(B=2, 16\)"):
        task({**image_batch(), "mask": torch.zeros(2, 15, dtype=torch.bool)})
    with pytest.raises(KeyError, match=r"reads batch\['image'\]"):
        task(text_batch())


# --- masks ------------------------------------------------------------------------------------


def test_token_mask_skips_padding_and_special_tokens():
    task = make("text_test", mask_ratio=0.5)
    batch = text_batch(3, 12)
    mask = task.draw_mask(batch, batch["input_ids"], (12,))
    assert not (mask & (batch["attention_mask"] == 0)).any()
    assert not mask[:, 0].any()
    # round(0.5 * candidates): 11, 6, 3 candidates
    assert mask.sum(1).tolist() == [round(0.5 * 11), round(0.5 * 6), round(0.5 * 3)]


def test_block_mask_on_the_vit_patch_grid():
    task = make("vit_test")
    x = image_batch(4)["image"]
    assert task.backbone.mask_grid(x) == (4, 4)
    mask = task.draw_mask({}, x, (4, 4))
    assert mask.shape == (4, 16) and mask.any(1).all() and (mask.sum(1) <= round(0.6 * 16)).all()
    assert torch.equal(task.backbone.output_mask(mask, (4, 4)), mask)  # class token not included


def test_swin_patch_mask_is_aligned_to_final_tokens():
    task = make("swinv2_test")  # patch 4, two stages: one final token per 2x2 patches
    x = image_batch(3)["image"]
    grid = task.backbone.mask_grid(x)
    assert grid == (8, 8) and task.backbone.mask_unit == 2
    mask = task.draw_mask({}, x, grid)
    out = task.backbone.output_mask(mask, grid)  # (3, 16)
    assert out.shape == (3, 16) and out.sum(1).tolist() == [round(0.6 * 16)] * 3
    back = out.view(3, 4, 4).repeat_interleave(2, 1).repeat_interleave(2, 2).flatten(1)
    assert torch.equal(back, mask)  # exact: every hidden patch belongs to a hidden token
    # a token is hidden only when all of its patches are; merge padding does not count
    m = torch.zeros(1, 3, 3, dtype=torch.bool)  # a 3x3 grid -> 2x2 tokens, padded
    m[0, :2, :2] = True  # token (0, 0) fully hidden
    m[0, 2, 2] = True  # token (1, 1): its only real patch
    m[0, 0, 2] = False
    m[0, 1, 2] = True  # token (0, 1): one of two real patches
    got = task.backbone.output_mask(m.flatten(1), (3, 3))
    assert got.tolist() == [[True, False, False, True]]


def test_mask_grid_for_other_sizes():
    swin = build_backbone("swin_test")
    assert swin.mask_grid(torch.zeros(1, 3, 36, 44)) == (9, 11)
    assert build_backbone("text_test").mask_grid(torch.zeros(2, 7, dtype=torch.long)) == (7,)
    assert build_backbone("vit_test").final_stage_depth == 2 and swin.final_stage_depth == 2


# --- the official constructions ---------------------------------------------------------------


def _ffn_outputs_by_hook(model, run) -> list[torch.Tensor]:
    """The output of every block's ``mlp`` (fairseq's ``fc_result``: FFN output before the
    dropout, the residual and, post-LN, ``final_layer_norm``), taken with forward hooks."""
    got = []
    hooks = [b.mlp.register_forward_hook(lambda m, i, o: got.append(o)) for b in model.blocks]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return got


def test_text_targets_equal_fairseq_construction():
    """fairseq data2vec_text: y = fc_results[-K:]; each F.layer_norm; mean; no final norm."""
    bb = build_backbone("text_test", depth=4)
    task = Data2Vec(bb, Data2VecConfig()).eval()
    assert (task.top_k, task.recipe.target_layer, task.recipe.final_norm) == (3, "ffn", "none")  # 10/12 of 4
    with torch.no_grad():
        for p in task.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = text_batch()
    x, attn = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        ffn = _ffn_outputs_by_hook(task.teacher, lambda: task.teacher(x, attention_mask=attn))
        got = task.targets(x, {"attention_mask": attn}, attn.bool())
    y = [F.layer_norm(t.float(), t.shape[-1:]) for t in ffn[-3:]]
    ref = sum(y) / len(y)
    valid = attn.bool()
    torch.testing.assert_close(got[valid], ref[valid], rtol=0, atol=1e-6)
    # and not the block outputs
    _, blocks = task.teacher.forward_intermediates(x, attention_mask=attn, indices=3)
    assert not torch.allclose(got, sum(F.layer_norm(b, b.shape[-1:]) for b in blocks) / 3, atol=1e-3)


def test_vit_targets_equal_data2vec_vision_construction():
    """data2vec_vision engine_for_cyclical: block outputs ('end') of target_layers, class token
    dropped, each F.layer_norm, mean, F.layer_norm (--post_target_layer_norm)."""
    bb = build_backbone("vit_test", depth=4, drop_path=0.0)
    task = Data2Vec(bb, Data2VecConfig()).eval()
    assert (task.top_k, task.recipe.target_layer, task.recipe.final_norm) == (2, "block", "layer")  # half of 4
    with torch.no_grad():
        for p in task.teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = image_batch()["image"]
    outs, t = [], x
    with torch.no_grad():
        t = task.teacher.embed(x)
        for block in task.teacher.blocks:  # the blocks by hand
            t = block(t)
            outs.append(t[:, 1:])
        got = task.targets(x, {}, torch.ones(2, 16, dtype=torch.bool))
    y = sum(F.layer_norm(o.float(), o.shape[-1:]) for o in outs[2:]) / 2
    torch.testing.assert_close(got, F.layer_norm(y, y.shape[-1:]), rtol=0, atol=1e-6)
    # the 'ffn' option on ViT: the MLP branch before the residual
    ffn_task = Data2Vec(build_backbone("vit_test", depth=4, drop_path=0.0), Data2VecConfig(target_layer="ffn")).eval()
    with torch.no_grad():
        ffn = _ffn_outputs_by_hook(ffn_task.teacher, lambda: ffn_task.teacher(x))
        got = ffn_task.targets(x, {}, torch.ones(2, 16, dtype=torch.bool))
    y = sum(F.layer_norm(o[:, 1:].float(), o.shape[-1:]) for o in ffn[2:]) / 2
    torch.testing.assert_close(got, F.layer_norm(y, y.shape[-1:]), rtol=0, atol=1e-6)


def _spy_on_student(task: Data2Vec) -> dict:
    """Record the ids and mask the student's ``forward_features`` is called with."""
    seen, run = {}, task.backbone.forward_features

    def spy(x, mask=None, **kw):
        seen["ids"], seen["mask"] = x, mask
        return run(x, mask=mask, **kw)

    task.backbone.forward_features = spy
    return seen


def test_text_masking_is_bert_80_10_10_with_loss_at_mask_tokens():
    """Of the chosen tokens 80 % reach the student as the mask token, 10 % as a random id, 10 %
    unchanged (fairseq MaskTokensDataset's defaults); the loss is taken at the mask tokens."""
    bb = build_backbone("text_test", mask_token_id=4, vocab_size=1000)
    task = Data2Vec(bb, Data2VecConfig(mask_ratio=0.5))
    seen = _spy_on_student(task)
    torch.manual_seed(0)
    counts = torch.zeros(3)
    chosen_total, hidden_total = 0, 0
    for _ in range(40):
        batch = text_batch(8, 64)
        ids = batch["input_ids"]
        chosen = task.draw_mask(batch, ids, (64,))
        out = task({**batch, "mask": chosen})
        student, mask = seen["ids"], seen["mask"]
        assert not (mask & ~chosen).any() and torch.equal(student[~chosen], ids[~chosen])
        kept = (student == ids) & ~mask
        counts += torch.tensor([mask[chosen].sum(), (student != ids)[chosen].sum(), kept[chosen].sum()])
        chosen_total += int(chosen.sum())
        hidden_total += out["masked_fraction"].item() * int(batch["attention_mask"].sum())
    share = counts / chosen_total  # mask token, random id (a random id equal to the old one counts as kept), kept
    n = chosen_total  # ~9000: the binomial std of a share near 0.1 is ~0.003
    assert abs(share[0] - 0.8) < 0.015, (share, n)
    assert abs(share[1] - 0.1 * 999 / 1000) < 0.012 and abs(share[2] - 0.1) < 0.012, (share, n)
    assert abs(hidden_total - counts[0]) < 1  # masked_fraction counts the mask-token positions only
    # replace_prob 1, random_prob 0: the previous behaviour (every chosen token hidden)
    task = Data2Vec(bb, Data2VecConfig(replace_prob=1.0, random_prob=0.0))
    batch = text_batch()
    chosen = task.draw_mask(batch, batch["input_ids"], (12,))
    seen = _spy_on_student(task)
    task({**batch, "mask": chosen})
    assert torch.equal(seen["mask"], chosen) and torch.equal(seen["ids"], batch["input_ids"])


def test_text_teacher_shares_embeddings_and_averages_blocks():
    task = make("text_test", ema_decay=0.5, ema_end_decay=0.5)
    with torch.no_grad():
        for p in task.backbone.parameters():
            p.add_(1.0)
    before = {n: p.clone() for n, p in task.teacher.named_parameters()}
    task.on_step_end(1, 10)
    student = dict(task.backbone.named_parameters())
    for n, p in task.teacher.named_parameters():
        expected = student[n] if not n.startswith("blocks.") else 0.5 * before[n] + 0.5 * student[n]
        torch.testing.assert_close(p, expected, rtol=0, atol=1e-6, msg=n)
    assert "word_embed.weight" in task.shared and not any(n.startswith("blocks.") for n in task.shared)
    # ema_transformer_only False: everything is averaged (data2vec_vision)
    task = make("text_test", ema_decay=0.5, ema_end_decay=0.5, ema_transformer_only=False)
    with torch.no_grad():
        task.backbone.word_embed.weight.add_(1.0)
    before = task.teacher.word_embed.weight.clone()
    task.on_step_end(1, 10)
    torch.testing.assert_close(task.teacher.word_embed.weight, 0.5 * before + 0.5 * task.backbone.word_embed.weight)


def test_loss_reduction_and_head_layers():
    torch.manual_seed(0)
    batch = text_batch()
    losses = {}
    for reduction in ("mean", "sum", "sqrt"):
        torch.manual_seed(1)  # the same weights and corruption each time
        task = make("text_test", loss_reduction=reduction)
        losses[reduction] = task({**batch, "mask": torch.ones(3, 12, dtype=torch.bool)})["loss"].item()
    d = 32
    assert losses["sum"] == pytest.approx(losses["mean"] * d, rel=1e-5)
    assert losses["sqrt"] == pytest.approx(losses["mean"] * math.sqrt(d), rel=1e-5)
    assert isinstance(make("vit_test").head, torch.nn.Linear)  # vision: linear
    head = make("text_test").head  # fairseq text head_layers 2: Linear(D, 2D), GELU, Linear(2D, D)
    assert [tuple(m.weight.shape) for m in head if hasattr(m, "weight")] == [(64, 32), (32, 64)]
    assert len([m for m in make("text_test", head_layers=3).head if hasattr(m, "weight")]) == 3


def test_new_field_errors():
    with pytest.raises(ValueError, match="target_layer must be one of"):
        make("vit_test", target_layer="attn")
    with pytest.raises(ValueError, match="loss_reduction must be one of"):
        make("vit_test", loss_reduction="max")
    with pytest.raises(ValueError, match="final_norm must be one of"):
        make("vit_test", final_norm="batch")
    with pytest.raises(ValueError, match="head_layers must be >= 1"):
        make("vit_test", head_layers=0)
    with pytest.raises(ValueError, match="target_layer 'ffn' needs a backbone that declares supports_ffn_targets"):
        make("swinv2_test", target_layer="ffn")
    with pytest.raises(ValueError, match="replace_prob and random_prob"):
        make("text_test", replace_prob=0.95, random_prob=0.1)
