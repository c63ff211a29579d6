"""Self-refining targets: EMA-evolving prompt masks, prompt labels, consensus labels, offsets.

All functions are pure and numpy-in/numpy-out; the arithmetic ones (:func:`alpha_schedule`,
:func:`ema_target`, :func:`binary_entropy`) also accept torch tensors. Probabilities are
sigmoids of mask logits; ``m_u`` stacks are ``(N, H, W)``, one map per point prompt.

Label codes of the pixel labels: ``1`` foreground, ``0`` background, :data:`IGNORE` (255).

Entropy is the binary entropy in **bits** (``H(0.5) = 1``), so the 0.3 threshold marks pixels
with ``0.053 < p < 0.947`` as uncertain.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "IGNORE",
    "REASON_AGREE",
    "REASON_DISAGREE",
    "REASON_ENTROPY",
    "REASON_OVERLAP",
    "REASON_UNDECIDED",
    "alpha_schedule",
    "binary_entropy",
    "consensus_labels",
    "consensus_reasons",
    "distance_targets",
    "ema_target",
    "hard_negative_mask",
    "instance_map",
    "prompt_labels",
]

IGNORE = 255

#: why a consensus pixel got its label (see :func:`consensus_reasons`)
REASON_AGREE, REASON_DISAGREE, REASON_OVERLAP, REASON_ENTROPY, REASON_UNDECIDED = range(5)


def alpha_schedule(t: float, total: float) -> float:
    """``α_t = max(0, 1 − t/T)``: weight of the frozen SAM's mask at step ``t`` of ``T``
    (1 at the start, 0 from step ``T`` on; 0 throughout when ``T <= 0``)."""
    if total <= 0:
        return 0.0
    return float(max(0.0, 1.0 - float(t) / float(total)))


def ema_target(m_base: Any, m_adapt: Any, alpha: float) -> Any:
    """``m_u = α·m_base + (1 − α)·m_adapt`` (probabilities, any array type)."""
    return alpha * m_base + (1.0 - alpha) * m_adapt


def binary_entropy(p: Any, eps: float = 1e-7) -> Any:
    """Binary entropy in bits, ``−p·log2 p − (1−p)·log2(1−p)``, with ``p`` clipped to
    ``[eps, 1−eps]`` (so ``H(0) = H(1) ≈ 0``). numpy arrays or torch tensors."""
    if isinstance(p, np.ndarray) or np.isscalar(p):
        q = np.clip(np.asarray(p, np.float64), eps, 1.0 - eps)
        return -(q * np.log2(q) + (1.0 - q) * np.log2(1.0 - q))
    q = p.clamp(eps, 1.0 - eps)
    return -(q * q.log2() + (1.0 - q) * (1.0 - q).log2())


def _stack(m_u: np.ndarray) -> np.ndarray:
    m = np.asarray(m_u, np.float32)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"expected (N, H, W) mask probabilities, got shape {m.shape}")
    return m


def prompt_labels(
    m_u: np.ndarray,
    entropy_threshold: float = 0.3,
    fg_threshold: float = 0.5,
    max_cover: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Prompt label ``S_P`` and ignore mask ``M_P`` of each instance, ``(N, H, W)`` each.

    ``S_P[i] = m_u[i] > fg_threshold`` (float32 0/1). ``M_P`` (bool, True = ignored in L_P) is
    set where the instance's own map is uncertain, ``H(m_u[i]) > entropy_threshold``, and —
    for every instance — where ``max_cover`` (2) or more instance masks cover the pixel.
    """
    m = _stack(m_u)
    s_p = m > fg_threshold
    cover = s_p.sum(axis=0) >= max_cover
    m_p = (binary_entropy(m) > entropy_threshold) | cover[None]
    return s_p.astype(np.float32), m_p


def consensus_reasons(
    m_u: np.ndarray,
    b: np.ndarray,
    entropy_threshold: float = 0.3,
    prompt_fg: float = 0.5,
    prompt_bg: float = 0.2,
    b_fg: float = 0.7,
    b_bg: float = 0.3,
    max_cover: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """``(S_I, reason)``: the consensus instance label and why each pixel got it.

    With ``mx = max_i m_u[i]`` (0 without prompts), ``cover = #{i : m_u[i] > prompt_fg}``
    and ``B`` the prompt-free decoder's foreground probability, the two branches vote:

    * prompt branch: foreground if ``mx > 0.5``, background if ``mx < 0.2``;
    * decoder branch: foreground if ``B > 0.7``, background if ``B < 0.3``.

    ``S_I`` is 1 where both vote foreground and ``cover < 2``, 0 where both vote background,
    :data:`IGNORE` elsewhere. The paper's clause "ignore where entropy > 0.3 or the two
    branches disagree, except where they agree" is read as: **agreement overrides the entropy
    rule** (a pixel both branches call foreground with, say, ``mx = 0.6`` keeps label 1 though
    ``H(0.6) > 0.3``), and every pixel without agreement is ignored. The reason code of an
    ignored pixel, first match wins: ``REASON_DISAGREE`` (one branch votes foreground, the other
    background), ``REASON_OVERLAP`` (both foreground but ``cover >= 2``), ``REASON_ENTROPY``
    (``H(mx) > 0.3``), ``REASON_UNDECIDED`` (a branch abstains on a confident prompt map).
    Labelled pixels have ``REASON_AGREE``.
    """
    m = _stack(m_u)
    b = np.asarray(b, np.float32)
    if b.shape != m.shape[1:]:
        raise ValueError(f"B has shape {b.shape}, masks have {m.shape[1:]}")
    mx = m.max(axis=0) if len(m) else np.zeros(b.shape, np.float32)
    cover = (m > prompt_fg).sum(axis=0)
    p_fg, p_bg = mx > prompt_fg, mx < prompt_bg
    d_fg, d_bg = b > b_fg, b < b_bg
    fg = p_fg & d_fg & (cover < max_cover)
    bg = p_bg & d_bg
    labels = np.full(b.shape, IGNORE, np.uint8)
    labels[fg] = 1
    labels[bg] = 0
    reason = np.full(b.shape, REASON_UNDECIDED, np.uint8)
    reason[binary_entropy(mx) > entropy_threshold] = REASON_ENTROPY
    reason[p_fg & d_fg & (cover >= max_cover)] = REASON_OVERLAP
    reason[(p_fg & d_bg) | (p_bg & d_fg)] = REASON_DISAGREE
    reason[fg | bg] = REASON_AGREE
    return labels, reason


def consensus_labels(m_u: np.ndarray, b: np.ndarray, **kwargs: float) -> np.ndarray:
    """Consensus instance label ``S_I`` (uint8: 1 fg, 0 bg, 255 ignore); see
    :func:`consensus_reasons` for the rules and the reading of the paper's clause."""
    return consensus_reasons(m_u, b, **kwargs)[0]


def hard_negative_mask(
    m_u: np.ndarray, b: np.ndarray, b_fg: float = 0.7, prompt_bg: float = 0.2
) -> np.ndarray:
    """Hard-negative pixels of the contrastive loss: the decoder is confident (``B > 0.7``)
    where the prompt branch says background (``max m_u < 0.2``). ``S_I`` never labels such a
    pixel background (it needs ``B < 0.3``), so "labelled background" is the prompt label."""
    m = _stack(m_u)
    b = np.asarray(b, np.float32)
    mx = m.max(axis=0) if len(m) else np.zeros(b.shape, np.float32)
    return (b > b_fg) & (mx < prompt_bg)


def instance_map(m_u: np.ndarray, s_i: np.ndarray) -> np.ndarray:
    """uint32 instance labels on the consensus foreground: pixel → ``1 + argmax_i m_u[i]``
    where ``S_I == 1`` (then exactly one prompt map exceeds 0.5), 0 elsewhere."""
    m = _stack(m_u)
    s_i = np.asarray(s_i)
    out = np.zeros(s_i.shape, np.uint32)
    if len(m):
        fg = s_i == 1
        out[fg] = m.argmax(axis=0)[fg].astype(np.uint32) + 1
    return out


def distance_targets(labels: np.ndarray) -> np.ndarray:
    """HoVer-Net horizontal/vertical maps ``(2, H, W)`` float32 of an instance label image.

    Channel 0 is the x offset of each pixel from its instance's centroid, channel 1 the y
    offset; negative and positive offsets are scaled separately by their largest magnitude in
    the instance, so each runs over ``[-1, 1]`` (0 at the centroid column/row, ±1 at the
    extremes). Background is 0. Touching instances meet with a jump from +1 to −1, which is
    what :func:`zeropath.nuclei.instances.instances_from_offsets` cuts along.
    """
    from scipy import ndimage as ndi

    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"expected a 2-D label image, got shape {lab.shape}")
    out = np.zeros((2, *lab.shape), np.float32)
    for idx, sl in enumerate(ndi.find_objects(lab.astype(np.int64, copy=False)), start=1):
        if sl is None:
            continue
        inst = lab[sl] == idx
        rr, cc = np.nonzero(inst)
        cy, cx = rr.mean(), cc.mean()
        for ch, off in ((0, cc - cx), (1, rr - cy)):
            off = off.astype(np.float64)
            neg, pos = off < 0, off > 0
            if neg.any():
                off[neg] /= -off[neg].min()
            if pos.any():
                off[pos] /= off[pos].max()
            out[ch][sl][inst] = off
    return out
