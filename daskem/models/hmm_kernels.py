"""Compiled inner loops of the hidden Markov models (numba, GIL released).

Every kernel works on one block of rows of a sequence file: ``starts[t]`` is true where a
new sequence begins at row ``t``. A block need not begin or end with a sequence: what
came before the block enters as a message (``alpha_in``: the normalised forward message
at the row before the block; ``delta_in``: the Viterbi scores there) and what comes
after it as another (``beta_out``: the normalised backward message at the block's last
row; ``exit_state``: the Viterbi state there). With ``starts[0]`` true and a uniform
``beta_out`` a block is self-contained.

The forward-backward recursion is the scaled one (Rabiner 1989): every forward vector
is normalised to sum 1 and its scale enters the log-likelihood, every backward vector
is normalised to sum 1, so nothing underflows however long the sequence; the emission
probabilities come in divided by their largest value per row (``frameprob``) and the
caller adds those logs back. The transfer kernels summarise a block as the matrix that
maps its incoming message to its outgoing one (sum-product, or max-plus for Viterbi),
which the driver chains across blocks.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, inline="always")
def _forward_row(prev, startprob, transmat, frame, start, out):  # type: ignore[no-untyped-def]
    """One scaled forward step: ``out`` receives the normalised forward vector of a row
    (emission ``frame``) after the one whose vector is ``prev``; returns its scale."""
    k = out.shape[0]
    c = 0.0
    for j in range(k):
        if start:
            v = startprob[j] * frame[j]
        else:
            s = 0.0
            for i in range(k):
                s += prev[i] * transmat[i, j]
            v = s * frame[j]
        out[j] = v
        c += v
    for j in range(k):
        out[j] /= c
    return c


@njit(nogil=True, cache=True)
def forward_log_scale(startprob, transmat, frameprob, starts, alpha_in):  # type: ignore[no-untyped-def]
    """The forward pass alone: ``log_scale`` of :func:`forward_backward` in O(k) memory."""
    n, k = frameprob.shape
    prev = alpha_in.copy()
    cur = np.empty(k)
    log_scale = 0.0
    for t in range(n):
        log_scale += np.log(_forward_row(prev, startprob, transmat, frameprob[t], starts[t], cur))
        prev, cur = cur, prev
    return log_scale


@njit(nogil=True, cache=True)
def forward_backward(startprob, transmat, frameprob, starts, alpha_in, beta_out):  # type: ignore[no-untyped-def]
    """Posteriors of one block: ``(gamma, xi_sum, start_sum, log_scale)``.

    ``gamma`` (n, k) are the state posteriors of every row, ``xi_sum`` (k, k) the
    expected transitions into the block's rows that do not start a sequence (the first
    row's from ``alpha_in``), ``start_sum`` (k) the posteriors of the rows that start one,
    and ``log_scale`` the sum of the logs of the forward scales: the log-likelihood of
    the block's rows given what came before, less the per-row emission maxima.

    The backward vectors are scaled by the forward scales (hmmlearn's scheme), so that
    ``gamma_t = alpha_t * beta_t`` and ``xi_t = alpha_{t-1} A f_t beta_t / c_t`` need no
    normalisation; the last row's backward vector is ``beta_out`` over ``alpha . beta_out``.
    The backward sweep accumulates the statistics as it goes.
    """
    n, k = frameprob.shape
    fwd = np.empty((n, k))
    scale = np.empty(n)
    gamma = np.empty((n, k))
    xi_sum = np.zeros((k, k))
    start_sum = np.zeros(k)
    log_scale = 0.0
    for t in range(n):
        c = _forward_row(alpha_in if t == 0 else fwd[t - 1], startprob, transmat, frameprob[t], starts[t], fwd[t])
        scale[t] = c
        log_scale += np.log(c)
    if n == 0:
        return gamma, xi_sum, start_sum, log_scale
    bwd = np.empty(k)
    tmp = np.empty(k)
    c = 0.0
    for j in range(k):
        c += fwd[n - 1, j] * beta_out[j]
    for j in range(k):
        bwd[j] = beta_out[j] / c
    for t in range(n - 1, -1, -1):
        for j in range(k):
            gamma[t, j] = fwd[t, j] * bwd[j]
        if starts[t]:
            for j in range(k):
                start_sum[j] += gamma[t, j]
            # The row before ends a sequence: its backward vector is all ones.
            for j in range(k):
                bwd[j] = 1.0
            continue
        for j in range(k):
            tmp[j] = frameprob[t, j] * bwd[j] / scale[t]
        for i in range(k):
            prev = alpha_in[i] if t == 0 else fwd[t - 1, i]
            s = 0.0
            for j in range(k):
                v = transmat[i, j] * tmp[j]
                xi_sum[i, j] += prev * v
                s += v
            bwd[i] = s
    return gamma, xi_sum, start_sum, log_scale


@njit(nogil=True, cache=True)
def transfer(startprob, transmat, frameprob, starts):  # type: ignore[no-untyped-def]
    """The block's sum-product transfer matrix, scaled to sum 1.

    Row ``a`` is the (scaled) forward message at the block's last row given that the
    state before the block was ``a``; so ``alpha_out ∝ alpha_in @ F`` and the backward
    message at the last row of the block before is ``∝ F @ beta_out``.
    """
    n, k = frameprob.shape
    f = np.eye(k)
    g = np.empty((k, k))
    for t in range(n):
        if starts[t]:
            for a in range(k):
                row = 0.0
                for i in range(k):
                    row += f[a, i]
                for j in range(k):
                    g[a, j] = row * startprob[j] * frameprob[t, j]
        else:
            for a in range(k):
                for j in range(k):
                    s = 0.0
                    for i in range(k):
                        s += f[a, i] * transmat[i, j]
                    g[a, j] = s * frameprob[t, j]
        total = g.sum()
        for a in range(k):
            for j in range(k):
                f[a, j] = g[a, j] / total
    return f


@njit(nogil=True, cache=True)
def viterbi(log_startprob, log_transmat, log_frameprob, starts, delta_in, exit_state):  # type: ignore[no-untyped-def]
    """The most probable states of the block's rows and the sum of their sequences' scores.

    ``delta_in`` are the Viterbi scores of the states at the row before the block,
    ``exit_state`` the state at the block's last row (``-1``: the best one, for a block
    that ends a sequence). Returns ``(states, log_prob)`` where ``log_prob`` sums the
    best-path scores of the sequences that end in the block (including the part before
    it), the last one included only when ``exit_state`` is ``-1``.
    """
    n, k = log_frameprob.shape
    delta = np.empty((n, k))
    psi = np.zeros((n, k), dtype=np.int64)
    states = np.zeros(n, dtype=np.int64)
    log_prob = 0.0
    for t in range(n):
        if starts[t]:
            if t > 0:
                log_prob += delta[t - 1].max()
            for j in range(k):
                delta[t, j] = log_startprob[j] + log_frameprob[t, j]
            continue
        for j in range(k):
            best = -np.inf
            arg = 0
            for i in range(k):
                v = (delta_in[i] if t == 0 else delta[t - 1, i]) + log_transmat[i, j]
                if v > best:
                    best = v
                    arg = i
            psi[t, j] = arg
            delta[t, j] = best + log_frameprob[t, j]
    if n == 0:
        return states, log_prob
    state = exit_state
    if state < 0:
        state = np.argmax(delta[n - 1])
        log_prob += delta[n - 1, state]
    states[n - 1] = state
    for t in range(n - 1, 0, -1):
        state = np.argmax(delta[t - 1]) if starts[t] else psi[t, state]
        states[t - 1] = state
    return states, log_prob


@njit(nogil=True, cache=True)
def viterbi_transfer(log_startprob, log_transmat, log_frameprob, starts):  # type: ignore[no-untyped-def]
    """The block's max-plus transfer matrix: ``(V, offset)``.

    ``V[a, c] + offset`` is the best log-score of the block's rows ending in state ``c``
    given state ``a`` before the block, so ``delta_out[c] = max_a delta_in[a] + V[a, c] +
    offset``; ``V`` is kept shifted so that its largest entry is 0.
    """
    n, k = log_frameprob.shape
    v = np.full((k, k), -np.inf)
    for a in range(k):
        v[a, a] = 0.0
    g = np.empty((k, k))
    offset = 0.0
    for t in range(n):
        for a in range(k):
            if starts[t]:
                row = v[a].max()
                for j in range(k):
                    g[a, j] = row + log_startprob[j] + log_frameprob[t, j]
                continue
            for j in range(k):
                best = -np.inf
                for i in range(k):
                    x = v[a, i] + log_transmat[i, j]
                    if x > best:
                        best = x
                g[a, j] = best + log_frameprob[t, j]
        top = g.max()
        offset += top
        for a in range(k):
            for j in range(k):
                v[a, j] = g[a, j] - top
    return v, offset
