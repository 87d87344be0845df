"""The Mamba block: the scan against a slow, obviously-correct reference, and mamba_ssm's parameter layout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from emotion.models.mamba import PARITY_TOLERANCE, Mamba, kernel_available, kernel_parity, selective_scan


def reference_scan(u, delta, A, B, C, D, z, delta_bias):
    """One time step after another, straight from the equations; float64 in, float64 out."""
    delta = F.softplus(delta + delta_bias[:, None])
    batch, d_inner, length = u.shape
    h = torch.zeros(batch, d_inner, A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(length):
        decay = torch.exp(delta[:, :, t, None] * A)
        h = decay * h + delta[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, dim=-1) * F.silu(z)


def random_scan_inputs(batch, d_inner, n_state, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = {
        "u": (batch, d_inner, length),
        "delta": (batch, d_inner, length),
        "A": (d_inner, n_state),
        "B": (batch, n_state, length),
        "C": (batch, n_state, length),
        "D": (d_inner,),
        "z": (batch, d_inner, length),
        "delta_bias": (d_inner,),
    }
    inputs = {name: torch.randn(shape, generator=g, dtype=torch.float64) for name, shape in shapes.items()}
    inputs["A"] = -torch.rand(d_inner, n_state, generator=g, dtype=torch.float64) * 2 - 0.1  # decaying
    return {name: value.requires_grad_() for name, value in inputs.items()}


@pytest.mark.parametrize(
    ("batch", "d_inner", "n_state", "length", "chunk_size"),
    [
        (2, 3, 4, 1, None),  # a single frame
        (2, 5, 3, 7, 3),  # length not a multiple of the chunk
        (3, 4, 16, 50, 16),
        (1, 6, 2, 13, 64),  # one chunk longer than the sequence
        (2, 8, 16, 33, None),  # the automatic chunk size
    ],
)
def test_scan_and_its_gradients_equal_the_sequential_reference(batch, d_inner, n_state, length, chunk_size):
    inputs = random_scan_inputs(batch, d_inner, n_state, length)
    fast = selective_scan(**inputs, chunk_size=chunk_size)
    slow = reference_scan(**inputs)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)

    grad_out = torch.randn_like(slow)
    fast_grads = torch.autograd.grad(fast, list(inputs.values()), grad_out)
    slow_grads = torch.autograd.grad(slow, list(inputs.values()), grad_out)
    for name, fast_grad, slow_grad in zip(inputs, fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(fast_grad, slow_grad, rtol=1e-9, atol=1e-9, msg=f"gradient of {name}")


@pytest.mark.parametrize(("batch", "d_inner", "n_state", "length"), [(2, 3, 4, 1), (3, 8, 16, 37)])
def test_the_scan_taken_while_exporting_to_onnx_equals_the_chunked_scan(monkeypatch, batch, d_inner, n_state, length):
    inputs = {name: value.detach() for name, value in random_scan_inputs(batch, d_inner, n_state, length).items()}
    in_float32 = {name: value.float() for name, value in inputs.items()}
    chunked = selective_scan(**in_float32)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)  # the scripted loop's branch
    torch.testing.assert_close(selective_scan(**in_float32), chunked, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(selective_scan(**inputs), reference_scan(**inputs), rtol=1e-10, atol=1e-10)


def test_scan_in_float32_stays_close_to_float64():
    inputs = random_scan_inputs(2, 8, 16, 40, seed=1)
    exact = reference_scan(**inputs)
    single = selective_scan(**{name: value.detach().float() for name, value in inputs.items()})
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), exact, rtol=1e-4, atol=1e-4)


def expected_mamba_ssm_state(d_model, d_state=16, d_conv=4, expand=2):
    """Names and shapes of mamba_ssm.modules.mamba_simple.Mamba (bias=False, conv_bias=True)."""
    d_inner = expand * d_model
    dt_rank = math.ceil(d_model / 16)
    return {
        "A_log": (d_inner, d_state),
        "D": (d_inner,),
        "in_proj.weight": (2 * d_inner, d_model),
        "conv1d.weight": (d_inner, 1, d_conv),
        "conv1d.bias": (d_inner,),
        "x_proj.weight": (dt_rank + 2 * d_state, d_inner),
        "dt_proj.weight": (d_inner, dt_rank),
        "dt_proj.bias": (d_inner,),
        "out_proj.weight": (d_model, d_inner),
    }


@pytest.mark.parametrize(("d_model", "d_state"), [(256, 16), (384, 16), (64, 64)])
def test_state_dict_matches_mamba_ssm_names_and_shapes(d_model, d_state):
    block = Mamba(d_model, d_state=d_state)
    actual = {name: tuple(tensor.shape) for name, tensor in block.state_dict().items()}
    assert actual == expected_mamba_ssm_state(d_model, d_state)


def test_initialisation_follows_mamba():
    block = Mamba(64, d_state=8)
    torch.testing.assert_close(-torch.exp(block.A_log[0]), -torch.arange(1.0, 9.0))
    dt = F.softplus(block.dt_proj.bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6


def test_block_is_causal_so_trailing_padding_leaves_earlier_outputs_unchanged():
    block = Mamba(32).eval()
    x = torch.randn(1, 20, 32)
    padded = torch.cat([x, torch.randn(1, 7, 32)], dim=1)
    torch.testing.assert_close(block(padded)[:, :20], block(x), rtol=1e-5, atol=1e-6)


def test_kernel_impl_on_cpu_fails_with_the_fix():
    block = Mamba(16, impl="kernel")
    with pytest.raises(RuntimeError, match="mamba_impl=kernel needs mamba-ssm on a CUDA device.*mamba_impl=auto"):
        block(torch.randn(1, 5, 16))


def test_unknown_impl_is_refused():
    with pytest.raises(ValueError, match="mamba_impl='triton'"):
        Mamba(16, impl="triton")


@pytest.mark.skipif(not (torch.cuda.is_available() and kernel_available()), reason="needs CUDA and mamba-ssm")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_cuda_kernel_matches_the_pytorch_scan_on_padded_batches(dtype):
    differences = kernel_parity(dtype)
    worst = max(differences, key=differences.get)
    assert differences[worst] <= PARITY_TOLERANCE[dtype], f"{worst}: {differences[worst]:.2e} ({differences})"
