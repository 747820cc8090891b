"""Reading the public weight formats trackers are released in.

Each tracker module maps a format's parameter names onto its own network; what is shared
(reading the files, MatConvNet's array layouts) lives here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


class WeightsError(ValueError):
    """A weights file that cannot be read or does not fit the network; says which."""


def load_torch_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pt/.pth file: a bare state dict, or a checkpoint holding one
    under 'state_dict' / 'model' / 'net' (the layouts training scripts commonly save) or
    'shared_layers' (py-MDNet)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle of arbitrary objects, a corrupt file, ...
        raise WeightsError(f"{path}: not a PyTorch weights file ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model", "net", "shared_layers"):
        if isinstance(data, dict) and key in data and isinstance(data[key], dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path}: no state dict of tensors inside")
    return {k.removeprefix("module."): v for k, v in data.items()}  # DataParallel prefix


def load_matconvnet_params(path: str | Path) -> dict[str, np.ndarray]:
    """Parameter name -> array of a MatConvNet DagNN/SimpleNN `.mat` file (`net.params`
    as a struct array with fields name and value, or `net.layers{i}.weights`)."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found")
    try:
        mat = loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as exc:
        raise WeightsError(f"{path}: not a MATLAB file ({type(exc).__name__}: {exc})") from None
    net = mat_net(mat)
    params: dict[str, np.ndarray] = {}
    raw_params = getattr(net, "params", None)
    if raw_params is not None:
        for entry in np.atleast_1d(raw_params):
            params[str(entry.name)] = np.asarray(entry.value, dtype=np.float32)
        return params
    layers = getattr(net, "layers", None)
    if layers is not None:  # SimpleNN: weights {filters, biases} per layer
        for layer in np.atleast_1d(layers):
            weights = np.atleast_1d(getattr(layer, "weights", []))
            name = str(getattr(layer, "name", f"layer{len(params)}"))
            for suffix, value in zip(("f", "b"), weights):
                params[name + suffix] = np.asarray(value, dtype=np.float32)
        return params
    raise WeightsError(f"{path}: no net.params or net.layers inside")


class _Fields:
    """Attribute access to a .mat file's top-level variables, like a loaded struct's fields."""

    def __init__(self, variables: dict[str, Any]) -> None:
        self.__dict__.update({k: v for k, v in variables.items() if not k.startswith("__")})


def mat_net(mat: dict[str, Any]) -> Any:
    """The network struct of a loaded MatConvNet file: the variable `net`, or the file itself
    when the net was saved with `save(file, '-struct', 'net')` (the released classification
    models: top-level `layers`, `meta`)."""
    return mat["net"] if "net" in mat else _Fields(mat)


def matconvnet_conv_weight(array: np.ndarray) -> torch.Tensor:
    """MatConvNet filters are H x W x Cin x Cout; PyTorch wants Cout x Cin x H x W."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:  # 1x1 filters squeezed by loadmat
        array = array[None, None]
    elif array.ndim == 3:  # Cout == 1 squeezed
        array = array[..., None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(3, 2, 0, 1)))


def matconvnet_batchnorm(gain: Any, bias: Any, moments: Any, eps: float = 1e-5) -> dict[str, torch.Tensor]:
    """MatConvNet's bnorm (multiplier, bias, moments = [mean, sigma]) as the tensors of a
    torch BatchNorm: sigma = sqrt(var + eps) there, so var = sigma^2 - eps."""
    moments = np.asarray(moments, dtype=np.float32).reshape(-1, 2)
    variance = np.clip(moments[:, 1] ** 2 - eps, 0.0, None)
    return {
        "weight": torch.from_numpy(np.asarray(gain, dtype=np.float32).reshape(-1)),
        "bias": torch.from_numpy(np.asarray(bias, dtype=np.float32).reshape(-1)),
        "running_mean": torch.from_numpy(np.ascontiguousarray(moments[:, 0])),
        "running_var": torch.from_numpy(variance),
    }
