"""Input validation for the core functions: every error names the argument and the shapes."""

from __future__ import annotations

import torch


def check_tensor(name: str, x: object, *, ndim: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    return x


def check_float(name: str, x: torch.Tensor) -> None:
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def check_finite(name: str, x: torch.Tensor, response_mask: torch.Tensor | None = None) -> None:
    """Raise if ``x`` has NaN/inf (only at positions selected by ``response_mask`` if given)."""
    bad = ~torch.isfinite(x)
    if response_mask is not None:
        bad = bad & response_mask.bool().reshape(response_mask.shape + (1,) * (x.ndim - response_mask.ndim))
    if bool(bad.any()):
        where = bad.nonzero()[0].tolist()
        raise ValueError(f"{name} contains NaN or inf (first at index {where}); shape {tuple(x.shape)}")


def check_mask(name: str, response_mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Validate a 0/1 mask of ``shape``; returns it as bool."""
    check_tensor(name, response_mask)
    if tuple(response_mask.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(response_mask.shape)}, expected {tuple(shape)}")
    if response_mask.dtype != torch.bool:
        if not bool(((response_mask == 0) | (response_mask == 1)).all()):
            raise ValueError(f"{name} must contain only 0 and 1 (or be bool)")
    return response_mask.bool()


def check_same_shape(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if tuple(x.shape) != tuple(ref.shape):
        raise ValueError(f"{name} has shape {tuple(x.shape)} but {ref_name} has shape {tuple(ref.shape)}")


def check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
