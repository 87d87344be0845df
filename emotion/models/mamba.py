"""Mamba (Gu & Dao, 2023): a selective state-space block over frames.

Parameter names and shapes are those of `mamba_ssm.Mamba`, so a checkpoint moves between the CUDA kernel
path (mamba-ssm, the `cuda` extra) and the pure-PyTorch path used everywhere else.
"""

from __future__ import annotations

import math
import warnings
from functools import cache
from typing import get_args

import torch
import torch.nn.functional as F
from torch import nn

from emotion.settings import MambaImpl


@cache
def _kernel_selective_scan():
    """mamba-ssm's fused CUDA scan, or None when the `cuda` extra is not installed."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn


def kernel_available() -> bool:
    return _kernel_selective_scan() is not None


# Elements of one chunk's (chunk, batch, d_inner, N) working tensors: about 4 MB, so they stay in cache.
CHUNK_ELEMENTS = 2**20


def selective_scan(u, delta, A, B, C, D, z, delta_bias, chunk_size: int | None = None):
    """The selective scan in PyTorch, with mamba-ssm's argument layout and `delta_softplus=True`.

    u, delta, z: (batch, d_inner, L); A: (d_inner, N); B, C: (batch, N, L); D, delta_bias: (d_inner,).
        delta_t = softplus(delta_t + delta_bias)
        h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t        (h_0 = 0; per channel, N states)
        y_t = <C_t, h_t> + D u_t,   output y_t * silu(z_t)
    Computed in float32 (float64 stays float64), as mamba-ssm does.
    """
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A, B, C, D, z, delta_bias = (t.to(dtype) for t in (u, delta, A, B, C, D, z, delta_bias))
    with torch.autocast(u.device.type, enabled=False):
        delta = F.softplus(delta + delta_bias[:, None])
        if torch.onnx.is_in_onnx_export():
            y = _scan_for_export(u, delta, A, B, C)
        else:
            if chunk_size is None:
                chunk_size = max(1, min(64, CHUNK_ELEMENTS // (u.shape[0] * u.shape[1] * A.shape[1])))
            y = _ChunkedScan.apply(u, delta, A, B, C, chunk_size)
        return (y + D[:, None] * u) * F.silu(z)


def _scan_for_export(u, delta, A, B, C):
    """_ChunkedScan's forward as one scripted loop over time steps. ONNX export traces the model, and a
    traced Python loop is unrolled for the example's length; a scripted one becomes an ONNX Loop over
    whatever length comes. Taken only while exporting: training needs the chunked scan's backward."""
    delta_t, drive, B_t, C_t = (tensor.permute(2, 0, 1) for tensor in (delta, delta * u, B, C))  # time first
    y = _scripted_scan_steps()(delta_t.unsqueeze(2), drive.unsqueeze(2), B_t.unsqueeze(-1), C_t.unsqueeze(2), A.T)
    return y.squeeze(2).permute(1, 2, 0)


@cache
def _scripted_scan_steps():
    """_scan_steps compiled by TorchScript, on first use: training never needs it."""
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export, whose ONNX exporter fixes the loop's length.
        warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=DeprecationWarning)
        return torch.jit.script(_scan_steps)


def _scan_steps(delta, drive, B, C, A_T):
    """h_t = exp(delta_t A) h_{t-1} + B_t (delta_t u_t) and y_t = C_t h_t, one step after another, time leading
    and each state (N, d_inner): delta, drive = delta u (L, b, 1, d); B (L, b, N, 1); C (L, b, 1, N);
    A_T (N, d) → y (L, b, 1, d).

    Laid out so for onnxruntime, which runs a loop's body on one thread: the broadcasts run along contiguous
    channels, and the outer product and the sum over N are matrix products. 200 steps of 8 × 512 channels
    and 16 states took it 14 ms so, 42 ms as broadcast multiplies and a sum over (b, d, N) states, and 34 ms
    in torch's chunked scan on two threads. Each step's decay is computed in the loop, not all steps' before
    it: indexing a precomputed (L, b, N, d) tensor copies a step's slice, which was slower still."""
    h = torch.zeros(delta.shape[1], A_T.shape[0], A_T.shape[1], dtype=delta.dtype, device=delta.device)
    outputs: list[torch.Tensor] = []
    for step in range(delta.shape[0]):
        h = torch.exp(delta[step] * A_T) * h + torch.matmul(B[step], drive[step])
        outputs.append(torch.matmul(C[step], h))
    return torch.stack(outputs)


class _ChunkedScan(torch.autograd.Function):
    """y_t = <C_t, h_t> with h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t, and its gradient by hand.

    Autograd through a time loop would keep every (batch, d_inner, N) state and a graph node per step.
    Here the forward keeps only the state at the start of each chunk of `chunk_size` steps; the backward
    recomputes one chunk's states from it and runs the adjoint recurrence
        g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}                  (g_t = dL/dh_t)
    backwards through the chunk. Everything that is not a recurrence is one batched tensor operation per chunk.
    Internally time is the leading axis, so each step touches one contiguous (batch, d_inner, N) block.
    Contractions are written as multiply-then-sum: over N = 16 these are matrix-vector products, which
    einsum's batched matmul runs several times slower on CPU.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk_size):
        u_t, delta_t = u.permute(2, 0, 1).contiguous(), delta.permute(2, 0, 1).contiguous()  # (L, b, d)
        B_t, C_t = B.permute(2, 0, 1).contiguous(), C.permute(2, 0, 1).contiguous()  # (L, b, N)
        y = torch.empty_like(u_t)
        h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
        chunk_starts = []
        for start in range(0, u_t.shape[0], chunk_size):
            chunk = slice(start, start + chunk_size)
            chunk_starts.append(h)
            states = _chunk_states(h, delta_t[chunk], u_t[chunk], A, B_t[chunk])
            y[chunk] = (states[1:] * C_t[chunk].unsqueeze(2)).sum(-1)
            h = states[-1].clone()  # a view would keep the whole chunk's buffer alive
        ctx.save_for_backward(u_t, delta_t, A, B_t, C_t, torch.stack(chunk_starts))
        ctx.chunk_size = chunk_size
        return y.permute(1, 2, 0)

    @staticmethod
    def backward(ctx, grad_y):
        u_t, delta_t, A, B_t, C_t, chunk_starts = ctx.saved_tensors
        chunk_size = ctx.chunk_size
        grad_y_t = grad_y.permute(2, 0, 1)
        grad_u, grad_delta = torch.empty_like(u_t), torch.empty_like(delta_t)
        grad_B, grad_C = torch.empty_like(B_t), torch.empty_like(C_t)
        grad_A = torch.zeros_like(A)
        carry = torch.zeros_like(chunk_starts[0])  # exp(delta_{t+1} A) g_{t+1} from the chunk after
        for index in reversed(range(len(chunk_starts))):
            chunk = slice(index * chunk_size, (index + 1) * chunk_size)
            delta_c, u_c, B_c, C_c, grad_y_c = delta_t[chunk], u_t[chunk], B_t[chunk], C_t[chunk], grad_y_t[chunk]
            decay = torch.exp(delta_c.unsqueeze(-1) * A)  # (k, b, d, N)
            states = _chunk_states(chunk_starts[index], delta_c, u_c, A, B_c, decay)
            # g_t, built in place over C_t dy_t, last step first.
            grads = grad_y_c.unsqueeze(-1) * C_c.unsqueeze(2)
            grads[-1] += carry
            for step in range(len(grads) - 2, -1, -1):
                grads[step].addcmul_(decay[step + 1], grads[step + 1])
            carry = decay[0] * grads[0]

            grad_C[chunk] = (states[1:] * grad_y_c.unsqueeze(-1)).sum(2)
            # d/d(delta_t A) of decay_t h_{t-1}: g_t decay_t h_{t-1}
            grad_exponent = grads * decay * states[:-1]
            grad_A += (grad_exponent * delta_c.unsqueeze(-1)).sum((0, 1))
            grad_delta_u = (grads * B_c.unsqueeze(2)).sum(-1)  # through delta_t u_t B_t
            grad_delta[chunk] = (grad_exponent * A).sum(-1) + grad_delta_u * u_c
            grad_u[chunk] = grad_delta_u * delta_c
            grad_B[chunk] = (grads * (delta_c * u_c).unsqueeze(-1)).sum(2)
        return (
            grad_u.permute(1, 2, 0),
            grad_delta.permute(1, 2, 0),
            grad_A,
            grad_B.permute(1, 2, 0),
            grad_C.permute(1, 2, 0),
            None,
        )


def _chunk_states(h0, delta_c, u_c, A, B_c, decay=None):
    """States h_{s-1}, h_s, …, h_{s+k-1} of one chunk, as (k + 1, b, d, N), from the state h0 before it."""
    if decay is None:
        decay = torch.exp(delta_c.unsqueeze(-1) * A)
    states = torch.empty((len(delta_c) + 1, *h0.shape), dtype=h0.dtype, device=h0.device)
    states[0] = h0
    torch.mul((delta_c * u_c).unsqueeze(-1), B_c.unsqueeze(2), out=states[1:])
    for step in range(len(delta_c)):
        states[step + 1].addcmul_(decay[step], states[step])
    return states


class Mamba(nn.Module):
    """One Mamba mixer: (batch, L, d_model) → (batch, L, d_model), causal in time."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        impl: str = "auto",
    ):
        super().__init__()
        if impl not in get_args(MambaImpl):
            raise ValueError(f"model.mamba_impl={impl!r} is not one of {get_args(MambaImpl)}.")
        self.impl = impl
        self.d_state = d_state
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        # S4D-real initialisation: A_n = -n for every channel.
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self._init_dt(dt_min, dt_max, dt_init_floor)

    def _init_dt(self, dt_min: float, dt_max: float, dt_floor: float) -> None:
        """Step sizes log-uniform in [dt_min, dt_max] at initialisation, through softplus(dt_proj.bias)."""
        nn.init.uniform_(self.dt_proj.weight, -(self.dt_rank**-0.5), self.dt_rank**-0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        length = hidden.shape[1]
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # (batch, d_inner, L) each
        x = F.silu(self.conv1d(x)[..., :length])
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt @ self.dt_proj.weight.T).transpose(1, 2)
        scan = self._scan_for(x)
        y = scan(
            x,
            delta,
            -torch.exp(self.A_log.float()),
            B.transpose(1, 2).contiguous(),
            C.transpose(1, 2).contiguous(),
            self.D.float(),
            z,
            self.dt_proj.bias.float(),
        )
        return self.out_proj(y.transpose(1, 2))

    def _scan_for(self, x: torch.Tensor):
        kernel = _kernel_selective_scan()
        use_kernel = self.impl == "kernel" or (self.impl == "auto" and kernel is not None and x.is_cuda)
        if not use_kernel:
            return selective_scan
        if kernel is None or not x.is_cuda:
            raise RuntimeError(
                "model.mamba_impl=kernel needs mamba-ssm on a CUDA device "
                f"(mamba-ssm {'installed' if kernel else 'not installed'}, tensors on {x.device.type}): "
                "install the `cuda` extra on a GPU machine, or use model.mamba_impl=auto."
            )
        return lambda u, delta, A, B, C, D, z, delta_bias: kernel(
            u, delta, A, B, C, D, z=z, delta_bias=delta_bias, delta_softplus=True
        )


class ResidualMamba(nn.Module):
    """Pre-norm residual: x + Dropout(Mamba(RMSNorm(x)))."""

    def __init__(self, d_model: int, dropout: float = 0.0, **mamba_kwargs):
        super().__init__()
        self.norm = nn.RMSNorm(d_model, eps=1e-5)  # mamba-ssm's epsilon
        self.mixer = Mamba(d_model, **mamba_kwargs)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.mixer(self.norm(x)))


# Largest kernel-vs-PyTorch difference accepted, relative to the largest magnitude of the PyTorch path's value.
# In float32 only the order of additions differs; under bfloat16 autocast the kernel also rounds its output
# to bfloat16, whose 8-bit mantissa alone is a relative error of 2^-8.
PARITY_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


def kernel_parity(dtype: torch.dtype, batch: int = 4, length: int = 300, d_model: int = 256) -> dict[str, float]:
    """How far mamba-ssm's CUDA kernel is from the PyTorch scan, on one padded batch with the same weights.

    Rows are zero-padded after their lengths, as the model pads them. Returns the largest difference of the
    outputs at valid frames, of the input's gradient and of each parameter's gradient (of a loss over valid
    frames only), each relative to the largest magnitude on the PyTorch side. `dtype` float32 runs in full
    precision; bfloat16 under autocast, as training on CUDA does. Needs CUDA and mamba-ssm.
    """
    device = torch.device("cuda")
    generator = torch.Generator(device).manual_seed(0)
    torch.manual_seed(0)
    blocks = {impl: Mamba(d_model, impl=impl).to(device) for impl in ("kernel", "torch")}
    blocks["torch"].load_state_dict(blocks["kernel"].state_dict())
    lengths = torch.linspace(length // 3, length, batch, device=device).long()
    valid = (torch.arange(length, device=device) < lengths[:, None]).unsqueeze(-1)
    x = torch.randn(batch, length, d_model, device=device, generator=generator) * valid
    weights = torch.randn(batch, length, d_model, device=device, generator=generator) * valid
    results = {}
    for impl, block in blocks.items():
        inputs = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = block(inputs)
        (out.float() * weights).sum().backward()
        grads = {f"grad_{name}": p.grad for name, p in block.named_parameters()}
        results[impl] = {"out": (out.float() * valid), "grad_input": inputs.grad, **grads}
    return {
        name: ((results["kernel"][name] - reference).abs().max() / reference.abs().max().clamp(min=1e-12)).item()
        for name, reference in results["torch"].items()
    }
