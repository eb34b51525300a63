"""The batch-key check: a task reading keys its dataset does not yield is one clear error
naming both sides, raised by ``Trainer.fit`` before any step (nothing read, run, or written);
keys the Trainer adds (further views) and keys a task reads only when there count."""

import pytest
import torch

from convergent.backbones import build_backbone
from convergent.data.protocol import ItemList
from convergent.data.registry import build_dataset
from convergent.tasks.configs import Data2VecConfig, MLMConfig, MoCoV3Config, SimCLRConfig, SimCSEConfig
from convergent.tasks.registry import build_task
from convergent.training.batch_keys import check_batch_keys, view_keys
from convergent.training.loop import Trainer
from tests.training_helpers import RegressTask, SyntheticImages, build, configs, eval_transform


def mlm():
    return build_task("mlm", build_backbone("text_test", mask_token_id=4), MLMConfig())


def texts(n: int = 4) -> ItemList:
    ids = torch.randint(5, 100, (n, 6))
    return ItemList([{"input_ids": ids[i], "attention_mask": torch.ones(6, dtype=torch.long)} for i in range(n)])


def test_mismatch_names_both_sides():
    images = build_dataset("fashion-mnist", "test", limit=8, img_size=8)
    with pytest.raises(ValueError) as e:
        check_batch_keys(mlm(), images)
    assert str(e.value) == (
        "task 'mlm' reads batch keys ['attention_mask', 'input_ids'] but dataset 'fashion-mnist' yields "
        "['image', 'label']: missing ['attention_mask', 'input_ids']"
    )
    check_batch_keys(mlm(), texts())  # the keys it reads: fine


def test_text_not_yet_tokenised_says_so():
    glosses = build_dataset("wordnet-glosses", "val", limit=4)
    with pytest.raises(ValueError, match=r"yields \['label', 'text'\].*with_tokenizer"):
        check_batch_keys(mlm(), glosses)


def test_fit_refuses_before_any_step(tmp_path):
    task = mlm()
    calls = []
    task.forward = lambda batch: calls.append(batch)
    data = SyntheticImages(16)
    trainer = Trainer(*configs(max_steps=2), tmp_path / "run", batch_size=8, progress=False)
    with pytest.raises(ValueError, match="task 'mlm' reads batch keys .* dataset 'synthetic-images' yields"):
        trainer.fit(task, data, eval_transform)
    assert calls == [] and data.reads == 0 and trainer.step == 0
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # no checkpoint, no metrics


def test_views_the_trainer_adds_count():
    moco = build_task("mocov3", build_backbone("vit_test"), MoCoV3Config(hidden_dim=32, out_dim=16))
    data = SyntheticImages(8)
    assert view_keys(moco, data, eval_transform) == ("image2",)
    assert view_keys(moco, data, None) == () and view_keys(build(RegressTask), data, eval_transform) == ()
    check_batch_keys(moco, data, view_keys(moco, data, eval_transform))
    with pytest.raises(ValueError, match=r"missing \['image2'\]; the Trainer adds .* only when fit has a transform"):
        check_batch_keys(moco, data)


def test_a_two_view_task_on_text_and_a_text_task_on_images():
    """SimCLR on glosses (no images to draw views from), SimCSE on images: one error each."""
    simclr = build_task("simclr", build_backbone("vit_test"), SimCLRConfig(out_dim=16))
    with pytest.raises(ValueError) as e:
        check_batch_keys(simclr, texts(), view_keys(simclr, texts(), eval_transform))
    assert str(e.value) == (
        "task 'simclr' reads batch keys ['image', 'image2'] but dataset 'items' yields ['attention_mask', "
        "'input_ids']: missing ['image', 'image2']; the Trainer draws the 2 views of a 2-view task from the "
        "dataset's images"
    )
    simcse = build_task("simcse", build_backbone("text_test"), SimCSEConfig())
    images = SyntheticImages(4)
    with pytest.raises(ValueError, match=r"^task 'simcse' reads batch keys \['input_ids'\] but dataset "
                       r"'synthetic-images' yields \['image', 'label'\]: missing \['input_ids'\]$"):  # fmt: skip
        check_batch_keys(simcse, images, view_keys(simcse, images, eval_transform))


def test_optional_keys_are_not_required():
    """data2vec on text reads attention_mask / token_type_ids when a batch holds them."""
    task = build_task("data2vec", build_backbone("text_test"), Data2VecConfig())
    assert task.batch_keys == ("input_ids",)
    assert task.optional_batch_keys == ("attention_mask", "token_type_ids")
    ids_only = ItemList([{"input_ids": torch.arange(5, 11)} for _ in range(2)])
    check_batch_keys(task, ids_only)
    with pytest.raises(ValueError, match=r"reads batch keys \['input_ids'\]"):
        check_batch_keys(task, SyntheticImages(4))


def test_only_contract_datasets_and_tasks():
    items = [{"image": torch.zeros(3, 32, 32, dtype=torch.uint8), "label": 0}] * 8
    with pytest.raises(TypeError, match="wrap a list of item dicts in convergent.data.protocol.ItemList"):
        check_batch_keys(build(RegressTask), items)
    check_batch_keys(build(RegressTask), ItemList(items))
    with pytest.raises(TypeError, match="trains a convergent.tasks.base.Task, not Linear"):
        check_batch_keys(torch.nn.Linear(2, 2), ItemList(items))
