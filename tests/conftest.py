"""Shared fixtures and input generators for the kernel tests."""
import pytest
import torch

CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


def make_input(kind: str, shape, dtype=torch.float64, seed=0, tau=1e-3) -> torch.Tensor:
    """Test matrices whose pairwise differences exercise every regime of the sigmoid.

    random      : spread of a few tau (most pairs inside the sigmoid window)
    wide        : uniform [0, 1] (most pairs saturated at tau = 1e-3)
    tied        : few distinct values, as in CIDEr/TF-IDF similarity matrices
    constant    : one value everywhere
    adversarial : exact ties, pairs at the +-30 tau saturation boundary, a large common
                  offset and +-inf-free extremes of magnitude
    """
    g = torch.Generator().manual_seed(seed)
    r, c = shape
    if kind == "random":
        x = torch.randn(r, c, generator=g, dtype=torch.float64) * 5 * tau
    elif kind == "wide":
        x = torch.rand(r, c, generator=g, dtype=torch.float64)
    elif kind == "tied":
        x = torch.randint(0, 4, (r, c), generator=g).double() * 2 * tau
    elif kind == "constant":
        x = torch.full((r, c), 0.25, dtype=torch.float64)
    elif kind == "adversarial":
        steps = torch.tensor([0.0, 0.0, 30.0, -30.0, 29.99, 30.01, 1e-6, 45.0, -1e-3, 1000.0], dtype=torch.float64)
        idx = torch.randint(0, len(steps), (r, c), generator=g)
        x = steps[idx] * tau + 10.0
    else:
        raise ValueError(kind)
    return x.to(dtype)


def assert_close_grad(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    """Gradient comparison relative to the gradient's scale (the reference's own sigmoid'
    loses relative accuracy deep in the tails, where values are ~1e-12 of the largest)."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual.to(expected.dtype), expected, rtol=rtol, atol=rtol * scale + 1e-10)
