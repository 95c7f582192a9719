"""A fast training step for the hybrid-gated SAE (docs/method.md; speed: docs/sae-benchmark.md).

The reference ``HybridGatedSAE.forward_losses`` leaves everything to autograd. Three facts
about the model let one training step cost little more than one dense encoder product:

1. Gate and magnitude share directions (W_mag = exp(r_mag) * W_gate row-wise), so a single
   product P = x @ W_gate.T gives both pre-activations: pi_gate = P + b_gate and
   pi_mag = exp(r_mag) * P + b_mag.
2. h and RA = ReLU(pi_gate) are non-zero only where pi_gate > 0, so both decodes are sums of
   about L0 decoder columns per sample, and every gradient lives on that same support:
   dL/dW_gate has non-zero rows only for features active somewhere in the batch (a sparse
   x dense product G^T x), dL/dW_dec non-zero columns only there, and r_mag, b_mag, b_gate
   gradients only there. x is data, so dL/dx is never formed.
3. The decoder-norm sparsity term only needs the norms of the active columns.

``hybrid_gated_step_loss`` measures the density of the gate on a sample of rows and runs the
sparse path below ``SPARSE_MAX_DENSITY`` and a fused dense path (still one encoder product,
both decodes and both decoder gradients in one product each) above it. Both return exactly
the loss of ``forward_losses`` and, through a custom ``torch.autograd.Function``, the same
gradients to float32 rounding.

On CUDA with autocast enabled, the encoder product runs in the autocast dtype (bfloat16);
everything after it stays float32.
"""

from __future__ import annotations

import logging
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from saerad.sae.errors import SAEError

log = logging.getLogger(__name__)

Path = Literal["auto", "sparse", "dense"]

# Fraction of (sample, feature) pairs with pi_gate > 0 above which the dense path is used.
# Measured crossover (forward + backward, n = 768, m = 49,152, one thread of a 2-core AMD
# EPYC): density 0.08 at batch 256 and at batch 1024 (L0 ~ 4,000), where both paths take
# ~8.7 s at batch 1024; docs/sae-benchmark.md has the table. Set lower than the crossover
# because the dense path gains more from a second core (its cost is matrix products).
SPARSE_MAX_DENSITY = 0.05

# Rows of the batch used to estimate density before choosing a path. The estimate only picks
# the faster of two exact paths, so a small sample is enough.
DENSITY_SAMPLE_ROWS = 128


# Elements of P thresholded per block when finding the support (4 MB of mask per block).
SUPPORT_BLOCK_ELEMENTS = 1 << 22


def gate_density(P: Tensor, neg_b_gate: Tensor, rows: int = DENSITY_SAMPLE_ROWS) -> float:
    """Fraction of entries with pi_gate > 0 among the first ``rows`` rows of P = x @ W_gate.T."""
    sample = P[:rows]
    if sample.numel() == 0:
        return 0.0
    return float(torch.count_nonzero(sample > neg_b_gate)) / sample.numel()


def _encoder_product(x: Tensor, W_gate: Tensor) -> Tensor:
    """P = x @ W_gate.T, in the autocast dtype on CUDA when autocast is on, returned float32."""
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        dt = torch.get_autocast_dtype("cuda")
        with torch.autocast("cuda", enabled=False):
            return (x.to(dt) @ W_gate.to(dt).T).float()
    return x @ W_gate.T


def _exclusive_offsets(index: Tensor, bins: int) -> Tensor:
    """Start offset of each bin for entries already sorted by ``index`` (embedding_bag style)."""
    counts = torch.bincount(index, minlength=bins)
    return torch.cumsum(counts, 0) - counts


def _csr_pattern(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A CSR matrix built from indices that are valid by construction (no invariant checks)."""
    with warnings.catch_warnings():
        # torch flags sparse CSR as beta; the one operation used here (sampled_addmm) is stable.
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


def _support(P: Tensor, neg_b_gate: Tensor) -> tuple[Tensor, Tensor]:
    """Row and column indices of P > -b_gate, in row-major order.

    Done in blocks of rows so that the boolean mask stays in cache and its memory is reused,
    instead of writing and re-reading a (B, m) mask (a tenth of the encoder product's time).
    """
    rows = max(1, SUPPORT_BLOCK_ELEMENTS // max(P.shape[1], 1))
    parts = []
    for start in range(0, P.shape[0], rows):
        idx = torch.nonzero(P[start:start + rows] > neg_b_gate)
        idx[:, 0] += start
        parts.append(idx)
    if not parts:
        return (torch.zeros(0, dtype=torch.long, device=P.device),) * 2
    support = torch.cat(parts) if len(parts) > 1 else parts[0]
    return support[:, 0].contiguous(), support[:, 1].contiguous()


def _zeroed_pair(spare: Tensor | None, shape_a: tuple[int, int], shape_b: tuple[int, int],
                 like: Tensor) -> tuple[Tensor, Tensor]:
    """Two zeroed tensors, carved from ``spare``'s storage where it has room, else fresh."""
    size_a, size_b = shape_a[0] * shape_a[1], shape_b[0] * shape_b[1]
    usable = (spare is not None and spare.is_contiguous() and spare.dtype == like.dtype
              and spare.device == like.device)
    room = spare.numel() if usable else 0
    flat = spare.view(-1) if room else None
    a = flat[:size_a].view(shape_a) if room >= size_a else None
    b = flat[size_a:size_a + size_b].view(shape_b) if room >= size_a + size_b else None
    out = []
    for t, shape in ((a, shape_a), (b, shape_b)):
        out.append(t.zero_() if t is not None
                   else torch.zeros(shape, dtype=like.dtype, device=like.device))
    return out[0], out[1]


class _SparseStep(torch.autograd.Function):
    """Loss terms from the support {(b, i): pi_gate[b, i] > 0} only, after one dense product."""

    @staticmethod
    def forward(ctx, x: Tensor, P: Tensor, W_gate: Tensor, b_gate: Tensor, r_mag: Tensor,
                b_mag: Tensor, W_dec: Tensor, b_dec: Tensor, l1_coeff: float):
        B, n = x.shape
        m = W_gate.shape[0]
        # Support in row-major order: entries of a sample are contiguous (the decode bags).
        bi, fi = _support(P, -b_gate)
        p_s = P[bi, fi]
        pg = p_s + b_gate[fi]
        er = torch.exp(r_mag[fi])
        pm = er * p_s + b_mag[fi]
        # h = 1[pi_gate > 0] relu(pi_mag); the strict test repeats the reference's gate.
        hv = torch.where((pg > 0) & (pm > 0), pm, torch.zeros_like(pm))
        rav = torch.relu(pg)

        # Only the decoder columns some sample uses: gather them once as rows (U, n).
        uniq, inv = torch.unique(fi, return_inverse=True)
        U = uniq.numel()
        dec_rows = W_dec.index_select(1, uniq).t().contiguous()
        norms = torch.linalg.vector_norm(dec_rows, dim=1)

        # Both decodes in one bag-sum: bags 0..B-1 weight the columns by h, B..2B-1 by RA.
        row_off = _exclusive_offsets(bi, B)
        nnz = bi.numel()
        both = F.embedding_bag(
            torch.cat([inv, inv]), dec_rows, torch.cat([row_off, row_off + nnz]),
            mode="sum", per_sample_weights=torch.cat([hv, rav]),
        ) if nnz else x.new_zeros(2 * B, n)
        res_h = both[:B].add_(b_dec).sub_(x)          # x_hat - x
        res_a = both[B:].add_(b_dec).sub_(x)          # x_hat_aux - x
        recon = res_h.pow(2).sum() / B
        aux = res_a.pow(2).sum() / B
        sparsity = l1_coeff * (rav * norms[inv]).sum() / B

        ctx.save_for_backward(x, bi, fi, inv, uniq, p_s, pg, pm, er, hv, rav, dec_rows, norms,
                              res_h, res_a, row_off)
        ctx.sizes = (B, n, m, U)
        # P is dead after the forward pass, but its pages are already mapped: the backward
        # pass writes the dense weight gradients into them instead of into fresh memory.
        # (A fresh 150 MB tensor costs ~40k page faults, about as much as zeroing it 7 times.)
        ctx.spare = P

        ctx.l1_coeff = l1_coeff
        return recon, sparsity, aux

    @staticmethod
    def backward(ctx, g_recon: Tensor, g_sparsity: Tensor, g_aux: Tensor):
        (x, bi, fi, inv, uniq, p_s, pg, pm, er, hv, rav, dec_rows, norms,
         res_h, res_a, row_off) = ctx.saved_tensors
        B, n, m, U = ctx.sizes
        nnz = bi.numel()
        d_xh = res_h * (2.0 / B) * g_recon             # dL/dx_hat, (B, n)
        d_xa = res_a * (2.0 / B) * g_aux               # dL/dx_hat_aux
        grad_b_dec = d_xh.sum(0) + d_xa.sum(0)

        # dL/dh and dL/dRA on the support: sampled dense-dense products (SDDMM) of the residual
        # gradients with the active decoder columns, evaluated only at the support.
        if nnz:
            pattern = _csr_pattern(torch.cat([row_off, row_off.new_tensor([nnz])]), inv,
                                   torch.ones(nnz, dtype=x.dtype, device=x.device), (B, U))
            dec_cols = dec_rows.t()                                       # (n, U) view
            d_h = torch.sparse.sampled_addmm(pattern, d_xh, dec_cols, beta=0.0).values()
            d_ra = torch.sparse.sampled_addmm(pattern, d_xa, dec_cols, beta=0.0).values()
        else:
            d_h = d_ra = x.new_zeros(0)
        coef_s = g_sparsity * (ctx.l1_coeff / B)
        d_ra = d_ra + coef_s * norms[inv]
        d_pm = torch.where(hv > 0, d_h, torch.zeros_like(d_h))
        d_pg = torch.where(pg > 0, d_ra, torch.zeros_like(d_ra))
        d_p = d_pg + d_pm * er                          # dL/dP, P = x @ W_gate.T

        zeros_m = torch.zeros(m, dtype=x.dtype, device=x.device)
        grad_b_gate = zeros_m.index_add(0, fi, d_pg)
        grad_b_mag = zeros_m.index_add(0, fi, d_pm)
        grad_r_mag = zeros_m.index_add(0, fi, d_pm * er * p_s)

        # Feature-major order for the two weight gradients (sparse^T x dense products, done
        # as weighted bag sums: bag u collects the rows of the samples that use feature u).
        order = torch.argsort(inv, stable=True)
        feat_off = _exclusive_offsets(inv, U)
        bi_f = bi[order]
        if nnz:
            grad_rows = F.embedding_bag(bi_f, x, feat_off, mode="sum",
                                        per_sample_weights=d_p[order])              # (U, n)
            # dW_dec[:, u] = sum_b h[b,u] dx_hat[b] + RA[b,u] dx_hat_aux[b]: one bag per
            # feature over the stacked residual gradients [d_xh; d_xa].
            inv2 = torch.cat([inv, inv])
            order2 = torch.argsort(inv2, stable=True)
            dec_grad_rows = F.embedding_bag(
                torch.cat([bi, bi + B])[order2], torch.cat([d_xh, d_xa]),
                _exclusive_offsets(inv2, U), mode="sum",
                per_sample_weights=torch.cat([hv, rav])[order2],
            )
        else:
            grad_rows = x.new_zeros(0, n)
            dec_grad_rows = x.new_zeros(0, n)
        # Sparsity term: d/dw (RA_sum * ||w||) = RA_sum * w / ||w|| (0 at w = 0, as autograd).
        ra_sum = torch.zeros(U, dtype=x.dtype, device=x.device).index_add_(0, inv, rav)
        scale = torch.where(norms > 0, coef_s * ra_sum / norms.clamp_min(1e-30),
                            torch.zeros_like(norms))
        dec_grad_rows.addcmul_(scale[:, None], dec_rows)

        spare, ctx.spare = ctx.spare, None     # None on a second backward (retain_graph)
        grad_W_gate, grad_W_dec = _zeroed_pair(spare, (m, n), (n, m), x)
        grad_W_gate.index_copy_(0, uniq, grad_rows)
        # Columns of a row-major (n, m) matrix: scatter from a contiguous (n, U) source, which
        # is several times faster than index_copy_ from the transposed view.
        grad_W_dec.scatter_(1, uniq.expand(n, U), dec_grad_rows.t().contiguous())
        return (None, None, grad_W_gate, grad_b_gate, grad_r_mag, grad_b_mag, grad_W_dec,
                grad_b_dec, None)


class _DenseStep(torch.autograd.Function):
    """Same loss with dense (B, m) codes, still from one encoder product; each decode and each
    decoder gradient is a single product over the stacked [h; RA] codes."""

    @staticmethod
    def forward(ctx, x: Tensor, P: Tensor, W_gate: Tensor, b_gate: Tensor, r_mag: Tensor,
                b_mag: Tensor, W_dec: Tensor, b_dec: Tensor, l1_coeff: float):
        B = x.shape[0]
        er = torch.exp(r_mag)
        pg = P + b_gate
        pm = torch.addcmul(b_mag, er, P)
        gate = pg > 0
        codes = torch.empty(2 * B, P.shape[1], dtype=P.dtype, device=P.device)
        torch.clamp(pm, min=0.0, out=codes[:B]).masked_fill_(~gate, 0.0)
        torch.clamp(pg, min=0.0, out=codes[B:])
        norms = torch.linalg.vector_norm(W_dec, dim=0)
        res = torch.addmm(b_dec, codes, W_dec.T).sub_(torch.cat([x, x]))
        recon = res[:B].pow(2).sum() / B
        aux = res[B:].pow(2).sum() / B
        sparsity = l1_coeff * (codes[B:] @ norms).sum() / B
        ctx.save_for_backward(x, P, er, codes, W_dec, norms, res)
        ctx.l1_coeff = l1_coeff
        return recon, sparsity, aux

    @staticmethod
    def backward(ctx, g_recon: Tensor, g_sparsity: Tensor, g_aux: Tensor):
        x, P, er, codes, W_dec, norms, res = ctx.saved_tensors
        B = x.shape[0]
        d_res = res.clone()
        d_res[:B] *= (2.0 / B) * g_recon
        d_res[B:] *= (2.0 / B) * g_aux
        grad_b_dec = d_res.sum(0)
        grad_W_dec = d_res.T @ codes                                  # (n, m)
        d_codes = d_res @ W_dec                                       # (2B, m)
        coef_s = g_sparsity * (ctx.l1_coeff / B)
        ra_sum = codes[B:].sum(0)
        grad_W_dec += W_dec * torch.where(norms > 0, coef_s * ra_sum / norms.clamp_min(1e-30),
                                          torch.zeros_like(norms))
        d_pm = d_codes[:B].masked_fill_(codes[:B] <= 0, 0.0)
        d_pg = d_codes[B:].add_(coef_s * norms).masked_fill_(codes[B:] <= 0, 0.0)
        grad_b_gate = d_pg.sum(0)
        grad_b_mag = d_pm.sum(0)
        grad_r_mag = (d_pm * P).sum(0) * er
        d_p = d_pm.mul_(er).add_(d_pg)
        grad_W_gate = d_p.T @ x
        return (None, None, grad_W_gate, grad_b_gate, grad_r_mag, grad_b_mag, grad_W_dec,
                grad_b_dec, None)


def hybrid_gated_step_loss(sae, x_scaled: Tensor, l1_coeff: float,
                           path: Path = "auto") -> dict[str, Tensor]:
    """Loss terms of a hybrid-gated SAE, equal to ``sae.forward_losses(x_scaled, l1_coeff)``.

    Returns {"loss", "recon", "sparsity", "aux"}, differentiable with respect to W_gate,
    b_gate, r_mag, b_mag, W_dec and b_dec (not x). ``path`` forces the sparse or dense
    branch; "auto" picks by the measured gate density (``SPARSE_MAX_DENSITY``).

    On the sparse path the gradients of W_gate and W_dec are views into the memory of the
    encoder product (see ``_SparseStep``); they behave as ordinary gradients and are freed
    with ``optimizer.zero_grad()``. Pair the step with ``torch.optim.Adam(fused=True)``: the
    default for-loop Adam over the 2 x 37.7 M decoder and encoder weights costs more than the
    whole sparse backward pass on CPU.
    """
    for name in ("W_gate", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"):
        if not isinstance(getattr(sae, name, None), torch.Tensor):
            raise SAEError(f"hybrid_gated_step_loss needs a hybrid-gated SAE with parameter "
                             f"{name!r}; got {type(sae).__name__}. Use sae.forward_losses instead.")
    n = sae.W_gate.shape[1]
    if x_scaled.ndim != 2 or x_scaled.shape[1] != n:
        raise SAEError(f"x_scaled must have shape (batch, {n}), got {tuple(x_scaled.shape)}")
    if path not in ("auto", "sparse", "dense"):
        raise SAEError(f"path must be 'auto', 'sparse' or 'dense', got {path!r}")
    x = x_scaled.detach().to(sae.W_gate.dtype)
    with torch.no_grad():
        P = _encoder_product(x, sae.W_gate.detach())
        if path == "auto":
            density = gate_density(P, -sae.b_gate.detach())
            path = "sparse" if density <= SPARSE_MAX_DENSITY else "dense"
            log.debug("gate density %.4g on sampled rows: %s path", density, path)
    step = _SparseStep if path == "sparse" else _DenseStep
    recon, sparsity, aux = step.apply(x, P, sae.W_gate, sae.b_gate, sae.r_mag, sae.b_mag,
                                      sae.W_dec, sae.b_dec, float(l1_coeff))
    return {"loss": recon + sparsity + aux, "recon": recon, "sparsity": sparsity, "aux": aux}
