"""Point-prompt masks decoded in local windows, and the self-refining targets built from them.

SAM's mask decoder attends from the prompt tokens to all ``e²`` image tokens (4096 for a 1024
input) and costs about 40 ms per prompt on one CPU core; a 1000² H&E crop holds hundreds of
nuclei. Here each prompt is decoded on a ``cells²`` window of the image embedding centred on its
point (with the matching slice of the dense positional encoding), which is ~15× cheaper and
keeps gradients. It is an approximation of SAM (the prompt sees only local context), used
consistently for the frozen masks ``m_base``, the adapted ones ``m_adapt`` and ``L_P``.

Windows live in SAM's low-resolution frame (``4e`` square): prompt ``i`` covers rows
``origin[i, 0] : origin[i, 0] + 4·cells`` and the matching columns. The target helpers
(:func:`window_targets`) compute the same quantities as :mod:`zeropath.points.targets` but on
windows, so hundreds of prompts never need ``(N, 256, 256)`` stacks.
"""

from __future__ import annotations

import numpy as np
import torch

from zeropath.points.targets import IGNORE, binary_entropy

__all__ = ["decode_windows", "paste_max", "smallest_mask", "window_origins", "window_targets"]


def window_origins(coords: torch.Tensor, emb_size: int, cells: int, stride: float) -> torch.Tensor:
    """Top-left ``(row, col)`` embedding cell of each prompt's window, ``(N, 2)`` long.

    ``coords`` are ``(N, 2)`` input-frame ``(x, y)``; windows are clamped inside the grid."""
    c = coords.detach().float() / stride
    org = torch.floor(c.flip(-1) - cells / 2 + 0.5).long()
    return org.clamp(0, emb_size - cells)


def decode_windows(
    sam,
    emb: torch.Tensor,
    coords: torch.Tensor,
    cells: int = 8,
    chunk: int = 128,
    index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask logits of single-point prompts on local windows of one image embedding.

    ``emb`` is ``(1, C, e, e)`` (gradients flow through it), ``coords`` ``(N, 2)`` input-frame
    xy. Returns ``(logits, iou, origins (N, 2) low-res row/col)``: with ``index`` (``(N,)``
    long, which of SAM's 4 outputs per prompt: 0 single-mask, 1..3 multimask) logits
    ``(N, 4c, 4c)`` and iou ``(N,)``, otherwise all outputs ``(N, 4, 4c, 4c)`` / ``(N, 4)``.
    """
    e = emb.shape[-1]
    cells = min(int(cells), e)
    stride = sam.img_size / e
    n = len(coords)
    org = window_origins(coords, e, cells, stride)
    low_len = 4 * cells
    m = sam.mask_decoder.num_mask_tokens
    if n == 0:
        shape = (0,) if index is not None else (0, m)
        return emb.new_zeros((*shape, low_len, low_len)), emb.new_zeros(shape), org * 4
    pe = sam.prompt_encoder.get_dense_pe()[0]
    ar = torch.arange(cells)
    outs, ious = [], []
    for s in range(0, n, chunk):
        o = org[s : s + chunk]
        rows = (o[:, 0, None] + ar)[:, :, None]
        cols = (o[:, 1, None] + ar)[:, None, :]
        win = emb[0][:, rows, cols].permute(1, 0, 2, 3)  # (b, C, c, c)
        pwin = pe[:, rows, cols].permute(1, 0, 2, 3)
        pts = coords[s : s + chunk, None, :].float()
        labels = torch.ones(pts.shape[:2], dtype=torch.long)
        sparse, dense = sam.prompt_encoder((pts, labels), None, None)
        low, iou = sam.mask_decoder.predict_masks(win, pwin, sparse, dense[..., :cells, :cells])
        if index is not None:
            ar_b = torch.arange(len(low))
            k = index[s : s + chunk]
            low, iou = low[ar_b, k], iou[ar_b, k]
        outs.append(low)
        ious.append(iou)
    return torch.cat(outs), torch.cat(ious), org * 4


def smallest_mask(logits: torch.Tensor) -> torch.Tensor:
    """Per prompt, the index (1..3) of the smallest non-empty multimask output of ``(N, 4, L,
    L)`` logits (on H&E the nucleus; the larger ones tend to cover tissue); 1 if all empty."""
    area = (logits[:, 1:] > 0).sum((-1, -2)).float()
    area = torch.where(area > 0, area, torch.full_like(area, float("inf")))
    return area.argmin(1) + 1


def paste_max(
    windows: np.ndarray, origins: np.ndarray, size: int, fill: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(max, argmax, count_above_half)`` over prompts of ``(N, L, L)`` window maps pasted at
    ``origins`` into a ``size²`` frame (``argmax`` is -1 where no window reaches)."""
    mx = np.full((size, size), fill, np.float32)
    arg = np.full((size, size), -1, np.int64)
    cover = np.zeros((size, size), np.int32)
    if len(windows) == 0:
        return mx, arg, cover
    ll = windows.shape[-1]
    for i, (r, c) in enumerate(np.asarray(origins).tolist()):
        w = windows[i]
        sub = mx[r : r + ll, c : c + ll]
        better = w > sub
        sub[better] = w[better]
        arg[r : r + ll, c : c + ll][better] = i
        cover[r : r + ll, c : c + ll] += w > 0.5
    return mx, arg, cover


def window_targets(
    m_u: np.ndarray,
    origins: np.ndarray,
    b: np.ndarray,
    valid: np.ndarray,
    entropy_threshold: float = 0.3,
    use_decoder: bool = True,
    veto: bool = True,
) -> dict[str, np.ndarray]:
    """The self-refining targets of one crop from windowed ``m_u`` ``(N, L, L)`` probabilities.

    Same rules as :func:`~zeropath.points.targets.prompt_labels`,
    :func:`~zeropath.points.targets.consensus_labels`,
    :func:`~zeropath.points.targets.hard_negative_mask` and
    :func:`~zeropath.points.targets.instance_map` (pixels outside every window have
    ``m_u = 0``). ``b`` is the decoder's foreground probability ``(S, S)``, ``valid`` marks
    pixels inside the image. With ``use_decoder=False`` (warm-up: a fresh decoder's ``B`` is
    about 0.5 everywhere and would veto every pixel) the prompt branch alone decides ``S_I``.
    With ``veto`` (the default here) the decoder only vetoes: a pixel is ignored where the
    two branches disagree confidently, and an undecided decoder (``0.3 <= B <= 0.7``) leaves
    the prompt branch's label; ``veto=False`` is the strict rule (both branches must agree),
    under which a decoder that is not yet confident labels nothing and never learns.
    Returns ``s_p``/``m_p`` ``(N, L, L)`` (prompt labels / ignored),
    ``empty`` ``(N,)`` prompts with an empty target (wholly ignored), ``s_i`` ``(S, S)`` uint8
    consensus labels, ``instances`` uint32, ``negatives`` bool.
    """
    size = b.shape[0]
    mx, arg, cover = paste_max(m_u, origins, size)
    ll = m_u.shape[-1] if len(m_u) else 0
    s_p = (m_u > 0.5).astype(np.float32)
    m_p = binary_entropy(m_u) > entropy_threshold
    # a click marks a nucleus: an empty mask is never a right answer for it, so a prompt whose
    # target is empty is left out of L_P (otherwise shrinking to nothing is rewarded)
    empty = s_p.reshape(len(s_p), -1).sum(1) == 0 if len(s_p) else np.zeros(0, bool)
    m_p[empty] = True
    for i, (r, c) in enumerate(np.asarray(origins).tolist()):
        m_p[i] |= (cover[r : r + ll, c : c + ll] >= 2) | ~valid[r : r + ll, c : c + ll]
    p_fg, p_bg = mx > 0.5, mx < 0.2
    d_fg, d_bg = b > 0.7, b < 0.3
    if not use_decoder:
        d_fg = d_bg = np.ones(b.shape, bool)
    elif veto:
        d_fg, d_bg = b >= 0.3, b <= 0.7
    s_i = np.full(b.shape, IGNORE, np.uint8)
    s_i[p_fg & d_fg & (cover < 2)] = 1
    s_i[p_bg & d_bg] = 0
    s_i[~valid] = IGNORE
    inst = np.zeros(b.shape, np.uint32)
    fg = s_i == 1
    inst[fg] = (arg[fg] + 1).astype(np.uint32)
    neg = (b > 0.7) & p_bg & valid
    return {
        "s_p": s_p,
        "m_p": m_p,
        "empty": empty,
        "s_i": s_i,
        "instances": inst,
        "negatives": neg,
    }
