"""The dataset registry: names, descriptions, suggestions, lazy (torch-free) import."""

import subprocess
import sys

import pytest

from convergent.data import registry


def test_names_and_describe():
    assert registry.names() == sorted(registry.names())
    assert {"fashion-mnist", "image-folder"} <= set(registry.names())
    assert "Fashion-MNIST" in registry.describe("fashion-mnist")
    assert registry.entry("image-folder").kind == "images"


def test_unknown_name_suggests():
    with pytest.raises(KeyError, match="did you mean fashion-mnist"):
        registry.build_dataset("fashion-mnst", "train")
    with pytest.raises(KeyError, match="unknown dataset 'zzz'") as info:
        registry.describe("zzz")
    assert "did you mean" not in str(info.value)


def test_register_twice_and_bad_target():
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_dataset("fashion-mnist", "a:b", "images", "dup")
    with pytest.raises(ValueError, match="module:function"):
        registry.register_dataset("new-one", "no_colon", "images", "bad")
    assert "new-one" not in registry.names()


def test_bad_limit():
    with pytest.raises(ValueError, match="limit"):
        registry.build_dataset("fashion-mnist", "train", limit=0)


def test_build_dispatches_with_arguments():
    ds = registry.build_dataset("fashion-mnist", "test", img_size=16, in_chans=1, limit=7)
    assert len(ds) == 7 and ds[0]["image"].shape == (1, 16, 16)


def test_registry_is_torch_free():
    code = (
        "import sys, convergent.data, convergent.data.registry as r, convergent.data.builtin; "
        "assert r.names(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
