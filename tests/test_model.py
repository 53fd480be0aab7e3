"""The generator: LaMa's architecture, key layout and weights files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from glama_deploy.model import CONFIGS, build_generator, count_parameters, get_config
from glama_deploy.model.weights import (
    WeightsError,
    infer_config,
    load_generator,
    read_weights,
    save_weights,
)

from .conftest import make_model

# shapes from official LaMa / big-lama checkpoints (REFERENCE.md section 1)
OFFICIAL_SHAPES = {
    "model.1.ffc.convl2l.weight": (64, 4, 7, 7),
    "model.4.ffc.convl2g.weight": (384, 256, 3, 3),
    "model.5.conv1.ffc.convg2g.conv1.0.weight": (192, 384, 1, 1),
    "model.5.conv1.ffc.convg2g.fu.conv_layer.weight": (384, 384, 1, 1),
    "model.5.conv1.bn_g.running_mean": (384,),
    "model.34.weight": (3, 64, 7, 7),
}


@pytest.mark.parametrize("name,params", [("big-lama", 50_975_875), ("lama-fourier", 27_048_835)])
def test_parameter_counts_match_lama(name, params):
    assert count_parameters(build_generator(name)) == params


def test_big_lama_key_layout():
    sd = build_generator("big-lama").state_dict()
    assert len(sd) == 989
    for key, shape in OFFICIAL_SHAPES.items():
        assert tuple(sd[key].shape) == shape, key
    assert tuple(sd["model.24.weight"].shape) == (512, 256, 3, 3)  # first ConvTranspose after 18 blocks
    # 9-block layout: ConvT at 15/18/21, output conv at 25
    sd9 = build_generator("lama-fourier").state_dict()
    assert tuple(sd9["model.15.weight"].shape) == (512, 256, 3, 3)
    assert tuple(sd9["model.25.weight"].shape) == (3, 64, 7, 7)
    assert "model.13.conv2.ffc.convg2g.fu.bn.running_var" in sd9 and "model.14.weight" not in sd9


def test_output_range_and_shape(tiny_model):
    img = torch.rand(2, 3, 64, 72)
    mask = (torch.rand(2, 1, 64, 72) > 0.5).float()
    with torch.no_grad():
        out = tiny_model(img, mask)
    assert out.shape == (2, 3, 64, 72)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_holes_are_zeroed_in_the_input(tiny_model):
    """LaMa sees image*(1-mask): what is under the hole cannot change the output."""
    img = torch.rand(1, 3, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:40, 20:44] = 1
    other = img.clone()
    other[..., 16:40, 20:44] = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(tiny_model(img, mask), tiny_model(other, mask))
    refine = build_generator(get_config("tiny", zero_holes=False)).eval()
    with torch.no_grad():
        assert not torch.equal(refine(img, mask), refine(other, mask))


def _official_ckpt(model: torch.nn.Module, path, extra_loss_keys: bool = True) -> None:
    """A PyTorch-Lightning-style checkpoint in the official layout (prefix `generator.`)."""
    state = {f"generator.{k}": v.clone() for k, v in model.state_dict().items()}
    if extra_loss_keys:
        state["loss_resnet_pl.impl.conv1.weight"] = torch.zeros(64, 3, 3, 3)
        state["discriminator.model0.0.weight"] = torch.zeros(64, 3, 4, 4)
    torch.save({"epoch": 3, "global_step": 1234, "pytorch-lightning_version": "1.2.9",
                "state_dict": state}, path)


@pytest.mark.parametrize("config", ["lama-fourier", "tiny"])
def test_official_checkpoint_loads_strictly(tmp_path, config):
    src = make_model(config, seed=1)
    path = tmp_path / "best.ckpt"
    _official_ckpt(src, path)
    model, meta = load_generator(path)
    assert model.config.name == config
    assert meta["step"] == "1234"
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_infer_config_big_lama_from_keys():
    state = build_generator("big-lama").state_dict()
    assert infer_config(state).name == "big-lama"


def test_safetensors_roundtrip_with_metadata(tmp_path, tiny_model):
    path = save_weights(tiny_model, tmp_path / "w.safetensors", step=42, source="unit test",
                        extra={"data": {"images": 3}})
    model, meta = load_generator(path)
    assert meta["step"] == "42" and meta["source"] == "unit test" and meta["config"] == "tiny"
    assert json.loads(meta["data"]) == {"images": 3}
    assert json.loads(meta["generator_config"])["n_blocks"] == 4
    x, m = torch.rand(1, 3, 32, 32), (torch.rand(1, 1, 32, 32) > 0.5).float()
    with torch.no_grad():
        assert torch.equal(model(x, m), tiny_model(x, m))
    assert not list(tmp_path.glob(".*.tmp")), "temp file left behind"


def test_mismatched_weights_name_keys(tmp_path, tiny_model):
    state = {k: v for k, v in tiny_model.state_dict().items() if "model.5." not in k}
    state["model.99.extra.weight"] = torch.zeros(3)
    state["model.1.ffc.convl2l.weight"] = torch.zeros(16, 4, 3, 3)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path), metadata={"config": "tiny"})
    with pytest.raises(WeightsError) as err:
        load_generator(path)
    msg = str(err.value)
    assert str(path) in msg and "missing keys" in msg and "model.5.conv1" in msg
    assert "unexpected keys: model.99.extra.weight" in msg
    assert "model.1.ffc.convl2l.weight: file (16, 4, 3, 3) vs model (16, 4, 7, 7)" in msg


def test_wrong_architecture_is_named(tmp_path):
    path = tmp_path / "lama.ckpt"
    _official_ckpt(make_model("tiny"), path, extra_loss_keys=False)
    with pytest.raises(WeightsError, match="does not match generator 'lama-fourier'"):
        load_generator(path, config=CONFIGS["lama-fourier"])


@pytest.mark.parametrize("content,suffix,needle", [
    (b"\x00garbage" * 10, ".safetensors", "not a readable safetensors file"),
    (b"not a zip or pickle", ".ckpt", "cannot be read as a PyTorch checkpoint"),
    (b"", ".h5", "unknown weights format"),
])
def test_corrupted_files_give_clear_errors(tmp_path, content, suffix, needle):
    path = tmp_path / f"w{suffix}"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=needle) as err:
        read_weights(path)
    assert str(path) in str(err.value)


def test_truncated_safetensors(tmp_path, tiny_model):
    path = save_weights(tiny_model, tmp_path / "w.safetensors")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_generator(path)


class _Config(dict):
    """Pickles like OmegaConf's DictConfig: a dict subclass with __getstate__ state."""

    def __getstate__(self):
        return {"_content": dict(self)}


class _Marker:
    """Pickles as a call that would create a file: proof that no untrusted code runs on load."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


class _Exec:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').close()",))


def test_lightning_ckpt_with_non_tensor_objects_loads_without_running_them(tmp_path):
    """weights_only=True refuses such files; we read the tensors and run none of the pickled calls."""
    import collections
    import pathlib

    import numpy as np

    src = make_model("tiny", seed=3)
    path = tmp_path / "best.ckpt"
    marker_a, marker_b = tmp_path / "ran-os-system", tmp_path / "ran-exec"
    state = collections.OrderedDict((f"generator.{k}", v.clone()) for k, v in src.state_dict().items())
    torch.save({
        "epoch": 39, "global_step": 2500, "state_dict": state,
        "hyper_parameters": _Config(generator={"kind": "ffc_resnet"}, lr=1e-3),
        "callbacks": {"ModelCheckpoint": {"best_model_path": pathlib.PurePosixPath("/ckpt/best.ckpt"),
                                          "best_model_score": np.float64(0.123)}},
        "loops": collections.defaultdict(list, a=[1]),
        "evil": [_Marker(marker_a), _Exec(marker_b)],
    }, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)  # the situation this handles

    model, meta = load_generator(path)
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert meta["step"] == "2500"
    skipped = meta["skipped_objects"]
    for name in ("_Config", "PurePosixPath", "system", "builtins.exec"):
        assert name in skipped, (name, skipped)
    assert not marker_a.exists() and not marker_b.exists(), "a pickled call was executed"


def test_ckpt_with_only_code_names_the_file(tmp_path):
    path = tmp_path / "evil.ckpt"
    marker = tmp_path / "ran"
    torch.save({"state_dict": {"x": _Marker(marker)}}, path)
    with pytest.raises(WeightsError, match="no generator weights found") as err:
        load_generator(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_ckpt_without_generator(tmp_path):
    path = tmp_path / "d.ckpt"
    torch.save({"state_dict": {"discriminator.w": torch.zeros(1)}}, path)
    with pytest.raises(WeightsError, match="no generator weights found"):
        load_generator(path)
