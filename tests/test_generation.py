"""``generate``: greedy decoding is deterministic and equals top_k=1 sampling and a
hand-written argmax loop; sampling follows the generator; eos stops rows; max_length bounds
the output; bad prompts and settings are clear errors."""

import pytest
import torch

from convergent.backbones import build_backbone
from convergent.generation import generate
from convergent.tasks.registry import build_task
from tests.tasks.test_mlm import tiny_cfg


@pytest.fixture
def task():
    model = build_task("causal-lm", build_backbone(tiny_cfg(causal=True)))
    with torch.no_grad():  # random matrices, unit embeddings: continuations depend on the prompt
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.3)
        model.backbone.word_embed.weight.normal_(0.0, 1.0)
    return model


def prompt(b: int = 2, length: int = 4) -> torch.Tensor:
    return torch.randint(4, 61, (b, length), generator=torch.Generator().manual_seed(1))


def test_greedy_is_deterministic_and_argmax(task):
    ids = prompt()
    a = generate(task, ids, 6, greedy=True)
    assert a.shape == (2, 10) and torch.equal(a[:, :4], ids)
    assert torch.equal(a, generate(task, ids, 6, greedy=True))
    by_hand = ids
    with torch.no_grad():
        for _ in range(6):
            logits = task.logits(task.backbone(by_hand))[:, -1]
            by_hand = torch.cat([by_hand, logits.argmax(-1, keepdim=True)], 1)
    assert torch.equal(a, by_hand)


def test_top_k_1_equals_greedy(task):
    ids = prompt()
    g = torch.Generator().manual_seed(3)
    sampled = generate(task, ids, 6, top_k=1, temperature=0.7, generator=g)
    assert torch.equal(sampled, generate(task, ids, 6, greedy=True))


def test_sampling_follows_the_generator(task):
    ids = prompt(b=4)
    a = generate(task, ids, 8, generator=torch.Generator().manual_seed(5))
    b = generate(task, ids, 8, generator=torch.Generator().manual_seed(5))
    c = generate(task, ids, 8, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    top3 = generate(task, ids, 8, top_k=3, generator=torch.Generator().manual_seed(5))
    assert top3.min() >= 0 and top3.max() < 61


def test_eos_stops_and_pads_finished_rows(task):
    ids = prompt(b=2)
    free = generate(task, ids, 6, greedy=True)  # (2, 10)
    only_first = [t for t in free[0, 4:].tolist() if t not in free[1, 4:].tolist()]
    assert only_first, "pick other prompts: the rows generate the same tokens"
    eos = only_first[0]
    end = free[0, 4:].tolist().index(eos) + 4
    # one row: stops right after eos
    alone = generate(task, ids[:1], 6, greedy=True, eos_id=eos)
    assert torch.equal(alone, free[:1, : end + 1])
    # two rows: the finished row gets the pad id while the other goes on
    both = generate(task, ids, 6, greedy=True, eos_id=eos, pad_id=60)
    assert both.shape == (2, 10) and torch.equal(both[1], free[1])
    assert torch.equal(both[0, : end + 1], free[0, : end + 1]) and (both[0, end + 1 :] == 60).all()
    # generation ends when the last row has finished
    common = next(t for t in free[1, 4:].tolist() if t in free[0, 4:].tolist())
    last = max(free[r, 4:].tolist().index(common) for r in range(2)) + 4
    assert generate(task, ids, 6, greedy=True, eos_id=common).shape == (2, last + 1)


def test_one_dimensional_prompt(task):
    ids = prompt(b=1)[0]
    out = generate(task, ids, 3, greedy=True)
    assert out.shape == (7,) and torch.equal(out, generate(task, ids[None], 3, greedy=True)[0])


def test_stops_at_max_length(task):
    assert task.max_length == 16
    out = generate(task, prompt(length=12), 10, greedy=True)
    assert out.shape == (2, 16)


def test_restores_training_mode(task):
    task.train()
    generate(task, prompt(), 2, greedy=True)
    assert task.training


def test_prompt_too_long_is_a_clear_error(task):
    with pytest.raises(ValueError, match="max_length=16"):
        generate(task, prompt(length=16), 1)


@pytest.mark.parametrize("kw", [dict(temperature=0.0), dict(top_k=0), dict(max_new_tokens=-1)])
def test_bad_settings(task, kw):
    with pytest.raises(ValueError):
        generate(task, prompt(), **{"max_new_tokens": 2, **kw})


def test_needs_a_causal_lm():
    mlm = build_task("mlm", build_backbone(tiny_cfg()))
    with pytest.raises(TypeError, match="causal-lm"):
        generate(mlm, prompt(), 2)
