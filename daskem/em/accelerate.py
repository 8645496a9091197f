"""SQUAREM acceleration (Varadhan & Roland 2008, steplength scheme S3), for any model.

The accelerator knows nothing of the model beyond the optional vector form of the
contract: ``model.to_vector(params)`` maps parameters to an unconstrained float vector
(log-weights, log-diagonal Cholesky factors, ...) and ``model.from_vector(vector, like)``
maps any finite vector back to valid parameters. EM is the fixed-point map
``M(theta) = m_step(e_step(theta))``. From an accepted point ``theta0`` with
``theta1 = M(theta0)`` and ``theta2 = M(theta1)``::

    r = theta1 - theta0,  v = theta2 - 2 theta1 + theta0,  alpha = -|r| / |v|  (S3)
    theta' = theta0 - 2 alpha r + alpha^2 v,    alpha clipped to [-step_max, -1]

``alpha = -1`` gives ``theta' = theta2``: the plain EM step. Each cycle costs two passes:
one E-step at ``theta1`` (which gives ``theta2``) and one at ``theta'`` (which gives its
log-likelihood and ``M(theta')``, the start of the next cycle, so the stabilising EM step
of the original scheme costs nothing extra).

Warm-up: the extrapolation models EM as a linear map near its fixed point, where
successive steps shrink along one direction and ``v ~ (lambda - 1) r`` points against
``r``. Far from an optimum (a random start, a mixture crossing a saddle) they do not, and
a long jump lands in another basin of attraction (a higher or lower optimum, reached in
more or fewer passes, by chance). So the run
takes plain EM steps (``alpha = -1``, no pass lost) until ``cos(r, v) <= -LINEAR_COSINE``
and extrapolates freely from its first accepted jump on. (On scikit-learn's digits, 10
principal components, 10 full-covariance components from random starts, the scheme
without the warm-up ended in another local optimum than plain EM from the same start for
28 seeds of 30 and took up to 1.57 times plain EM's passes; with it, the same optimum for
all 30 and at most plain EM's passes: ``benchmarks/bench_squarem_digits.py``.)

Monotonicity safeguard: ``theta'`` is accepted only if its log-likelihood is at least that
of ``theta1``; otherwise the fit falls back to the plain EM step ``theta2`` (whose
log-likelihood EM guarantees is no lower) and ``step_max`` shrinks. Accepted points are
the only ones recorded, so the recorded log-likelihood never decreases. ``step_max``
starts at 1 and grows fourfold each time a step reaches it (the SQUAREM package's
defaults).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from daskem.errors import ParameterError
from daskem.models.base import VectorForm

ACCELERATIONS = (None, "squarem")

#: Factor by which step_max grows when a step reaches it and shrinks on a rejected step.
STEP_FACTOR = 4.0

#: Extrapolation starts once successive EM steps align: cos(r, v) <= -LINEAR_COSINE.
LINEAR_COSINE = 0.95

_STEP, _JUMP = 0.0, 1.0


def check_accelerate(model: Any, accelerate: str | None) -> None:
    """Raise a clear error if ``accelerate`` is unknown or the model lacks the vector form."""
    if accelerate not in ACCELERATIONS:
        raise ParameterError(f"accelerate must be None or 'squarem'; got {accelerate!r}.")
    if accelerate == "squarem" and not isinstance(model, VectorForm):
        raise ParameterError(
            f"accelerate='squarem' needs the model's vector form (to_vector/from_vector), which "
            f"{type(model).__name__} does not provide. Use accelerate=None."
        )


@dataclass
class Squarem:
    """The state of one SQUAREM run between passes.

    Attributes
    ----------
    model : Model
        The model (with ``to_vector`` / ``from_vector``).
    base : ndarray or None
        Vector of the accepted point ``theta0`` the next extrapolation starts from.
    point : ndarray or None
        Vector of ``theta1`` while an extrapolated point awaits its pass.
    alpha : float
        Steplength of the pending extrapolation.
    step_max : float
        Largest steplength magnitude allowed now.
    reference : float
        Total log-likelihood an extrapolated point must reach (that of ``theta1``, the
        last accepted point).
    fallback : Params or None
        ``theta2``, the plain EM step, while an extrapolated point awaits its pass.
    started : bool
        Whether an extrapolation has been accepted (the warm-up is over).
    """

    model: Any
    base: np.ndarray | None = None
    point: np.ndarray | None = None
    alpha: float = -1.0
    step_max: float = 1.0
    reference: float = -np.inf
    fallback: Any = None
    started: bool = False

    @property
    def jumping(self) -> bool:
        """Whether the pending point is an extrapolation (not yet accepted)."""
        return self.fallback is not None

    def accepted(self, point: Any, result: Any, loglik: float) -> Any:
        """Record an accepted ``point`` with ``result = M(point)``; return the next point to evaluate.

        ``loglik`` is the total log-likelihood of ``point``.
        """
        vector = self.model.to_vector(point)
        # The bar for an extrapolation from here (and always finite in a checkpoint).
        self.reference = loglik
        if self.base is None or self.jumping:
            # The first point of a run, or an accepted extrapolation: start a cycle there.
            self.started = self.started or self.jumping
            self.base, self.point, self.fallback = vector, None, None
            return result
        base = self.base
        r = vector - base
        v = self.model.to_vector(result) - 2.0 * vector + base
        rr, vv = float(r @ r), float(v @ v)
        alpha = -np.sqrt(rr / vv) if vv > 0.0 else -1.0
        alpha = float(np.clip(alpha, -self.step_max, -1.0))
        if not (self.started or float(r @ v) <= -LINEAR_COSINE * np.sqrt(rr * vv)):
            alpha = -1.0  # warm-up: the steps do not align yet, take the plain EM step
        if alpha == -self.step_max:
            self.step_max *= STEP_FACTOR
        candidate = self._extrapolate(base, r, v, alpha, result)
        if candidate is None:
            self.base = vector
            return result
        self.point, self.alpha, self.fallback = vector, alpha, result
        return candidate

    def _extrapolate(self, base: np.ndarray, r: np.ndarray, v: np.ndarray, alpha: float, like: Any) -> Any:
        if alpha == -1.0:
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            vector = base - 2.0 * alpha * r + alpha * alpha * v
        if not np.all(np.isfinite(vector)):
            return None
        try:
            return self.model.from_vector(vector, like)
        except (ArithmeticError, np.linalg.LinAlgError, ValueError):
            return None

    def rejected(self) -> Any:
        """The extrapolated point fell short: return the plain EM step to evaluate instead."""
        fallback = self.fallback
        self.base, self.point, self.fallback = self.point, None, None
        self.step_max = max(1.0, self.step_max / STEP_FACTOR)
        return fallback

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The state as float64 arrays for a checkpoint (the pending point is recomputed)."""
        assert self.base is not None
        return {
            "squarem_base": self.base,
            "squarem_point": self.point if self.point is not None else self.base,
            "squarem_state": np.array(
                [_JUMP if self.jumping else _STEP, self.alpha, self.step_max, self.reference, float(self.started)],
                dtype=np.float64,
            ),
        }

    def restore(self, arrays: dict[str, np.ndarray], result: Any) -> Any:
        """Restore from :meth:`to_arrays` output and ``result`` (``M`` of the last accepted point).

        Returns the point to evaluate next, bitwise the one an uninterrupted run would.
        """
        state = [float(x) for x in arrays["squarem_state"]]
        phase, alpha, step_max, reference = state[:4]
        # A checkpoint written before the warm-up existed continues without one.
        self.started = bool(state[4]) if len(state) > 4 else True
        self.base, self.alpha, self.step_max, self.reference = arrays["squarem_base"], alpha, step_max, reference
        if phase != _JUMP:
            return result
        self.point = arrays["squarem_point"]
        base = self.base
        r = self.point - base
        v = self.model.to_vector(result) - 2.0 * self.point + base
        self.fallback = result
        candidate = self._extrapolate(base, r, v, alpha, result)
        assert candidate is not None  # it was valid when it was first computed
        return candidate
