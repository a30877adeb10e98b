"""Safe checkpoint loading: nothing in a file may run code; training checkpoints are unwrapped."""
import argparse
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from models.checkpoint import CheckpointError, load_state_dict


class _Payload:
    """Unpickling this calls os.system; a safe loader must never get that far."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _sd(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(3, 2, generator=g), "a.bias": torch.randn(3, generator=g)}


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"a.weight": torch.ones(2), "x": _Payload(marker)}, path)
    for allow in [(), (argparse.Namespace,)]:
        with pytest.raises(CheckpointError, match="execute code") as e:
            load_state_dict(path, allow_globals=allow)
        assert "system" in str(e.value)  # names the refused global (posix.system / nt.system)
    assert not marker.exists()


def test_namespace_in_training_checkpoint_needs_allow_list(tmp_path):
    path = tmp_path / "0001000.pt"
    torch.save({"model": _sd(0), "ema": _sd(1), "opt": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "args": argparse.Namespace(model="DiT-S/2", image_size=256)}, path)
    with pytest.raises(CheckpointError, match="argparse.Namespace"):
        load_state_dict(path)
    sd, meta = load_state_dict(path, allow_globals=[argparse.Namespace])
    assert json.loads(meta["training_args"]) == {"model": "DiT-S/2", "image_size": 256}  # plain values of args
    assert sd.keys() == _sd().keys()
    assert torch.equal(sd["a.weight"], _sd(1)["a.weight"])  # ema preferred over model


@pytest.mark.parametrize("wrap, suffix", [
    (lambda sd: {"model": sd, "steps": 5}, ".pth"),
    (lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, ".ckpt"),
    (lambda sd: {"_orig_mod." + k: v for k, v in sd.items()}, ".bin"),
    (lambda sd: {"module": {"module._orig_mod." + k: v for k, v in sd.items()}}, ".pt"),
])
def test_unwrap_and_strip_prefixes(tmp_path, wrap, suffix):
    path = tmp_path / f"ckpt{suffix}"
    torch.save(wrap(_sd()), path)
    sd, _ = load_state_dict(path)
    assert sd.keys() == _sd().keys()
    assert all(torch.equal(sd[k], v) for k, v in _sd().items())


def test_safetensors_metadata_round_trip(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file(_sd(), str(path), metadata={"num_classes": "10", "arch": "dit"})
    sd, meta = load_state_dict(path)
    assert meta == {"num_classes": "10", "arch": "dit"}
    assert torch.equal(sd["a.bias"], _sd()["a.bias"])
    save_file(_sd(), str(path))
    assert load_state_dict(path)[1] == {}


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_file(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    sd = {"w": torch.randn(64, 64)}
    torch.save(sd, path) if suffix == ".pt" else save_file(sd, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_state_dict(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated"):
        load_state_dict(path)


def test_missing_unsupported_and_non_tensor_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "nope.pt")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=".safetensors"):
        load_state_dict(tmp_path / "w.onnx")
    for i, obj in enumerate([[torch.ones(1)], {"lr": 0.1, "name": "x"}, {}]):
        torch.save(obj, tmp_path / f"{i}.pt")
        with pytest.raises(CheckpointError, match="dict of tensors"):
            load_state_dict(tmp_path / f"{i}.pt")


def test_prefer_overrides_the_ema_default(tmp_path):
    # LlamaGen's official sampler reads "model" from a GPT training checkpoint even when "ema" is present.
    path = tmp_path / "c2i.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "ema": {"w": torch.ones(1)}}, path)
    assert load_state_dict(path)[0]["w"].item() == 1.0
    assert load_state_dict(path, prefer=("model",))[0]["w"].item() == 0.0
