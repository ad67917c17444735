"""`TokenFit`: a worker's run time for one model as a line in the task's token counts,
run ≈ a + b·input_tokens + c·output_tokens, learned online by recursive least squares with a
forgetting factor, and the spread of its predictions around what then happened. Sans-I/O.

Promises: constant memory (three coefficients, a 3×3 matrix, two counters); every update is
O(1) with no matrix inversion; a non-finite value or a covariance gone bad is never kept (the
covariance starts over, the coefficients stay); predictions are never negative.
"""

from __future__ import annotations

import math

from p2psched.scheduler.estimate import Tokens

FEATURES = 3  # 1, input_tokens, output_tokens
# Token counts enter in thousands: coefficients and run times then are of like size, which
# keeps the covariance well conditioned.
_SCALE = 1e-3
# The covariance starts large (we know nothing of the coefficients) and is capped at that:
# without new kinds of input (say, every task asks the same output) forgetting would
# otherwise grow it without bound in the directions nobody varies ("windup").
_P0 = 1e4
_TRACE_CAP = FEATURES * _P0


def _features(tokens: Tokens) -> tuple[float, float, float]:
    return (1.0, tokens.input * _SCALE, tokens.output * _SCALE)


class TokenFit:
    """Run time of one (worker, model) in its tasks' tokens. `forgetting` in (0, 1]: how much
    of the past each observation keeps (0.99 weighs about the last 100 tasks), so the fit
    follows a worker whose speed drifts. `err` is the spread of the fit's predictions around
    the run times that followed (each made before it learned that run), so it is honest about
    the fit's own error, not only the noise it could not explain."""

    __slots__ = ("n", "theta", "p", "forgetting", "alpha_min", "sq_err", "judged")

    def __init__(self, forgetting: float = 0.99, alpha_min: float = 0.05) -> None:
        if not 0.0 < forgetting <= 1.0:
            raise ValueError(f"forgetting must be in (0, 1], got {forgetting!r}")
        self.n = 0
        self.theta = [0.0] * FEATURES
        self.p = _identity(_P0)
        self.forgetting = forgetting
        self.alpha_min = alpha_min
        self.sq_err = 0.0  # a moving mean of squared prediction errors
        self.judged = 0  # predictions it was judged on (those made once it had a fit)

    def predict(self, tokens: Tokens) -> float:
        """The expected run time, in seconds, of a task of `tokens` (>= 0)."""
        x = _features(tokens)
        return max(0.0, sum(t * xi for t, xi in zip(self.theta, x)))

    @property
    def err(self) -> float:
        """The spread (root mean square) of its predictions' errors, in seconds."""
        return math.sqrt(self.sq_err)

    def add(self, tokens: Tokens, run_s: float) -> None:
        """Learn that a task of `tokens` ran `run_s` seconds."""
        if not (math.isfinite(run_s) and run_s >= 0):
            raise ValueError(f"run_s must be finite and >= 0, got {run_s!r}")
        x = _features(tokens)
        if self.n >= FEATURES:  # (before that, the line is not determined: no prediction)
            miss = run_s - self.predict(tokens)
            self.judged += 1
            w = max(self.alpha_min, 1.0 / self.judged)
            self.sq_err += w * (miss * miss - self.sq_err)
        self.n += 1
        p, lam = self.p, self.forgetting
        px = [sum(p[i][j] * x[j] for j in range(FEATURES)) for i in range(FEATURES)]
        denom = lam + sum(x[i] * px[i] for i in range(FEATURES))
        gain = [v / denom for v in px]
        miss = run_s - sum(t * xi for t, xi in zip(self.theta, x))
        theta = [t + g * miss for t, g in zip(self.theta, gain)]
        # P ← (P − k·(Px)ᵀ) / λ, kept symmetric; not divided by λ once at its cap (see _P0).
        new = [[p[i][j] - gain[i] * px[j] for j in range(FEATURES)] for i in range(FEATURES)]
        if sum(new[i][i] for i in range(FEATURES)) / lam <= _TRACE_CAP:
            new = [[v / lam for v in row] for row in new]
        for i in range(FEATURES):
            for j in range(i):
                new[i][j] = new[j][i] = (new[i][j] + new[j][i]) / 2.0
        if all(math.isfinite(t) for t in theta):
            self.theta = theta
        if all(new[i][i] > 0.0 for i in range(FEATURES)) and all(
            math.isfinite(v) for row in new for v in row
        ):
            self.p = new
        else:  # rounding ate its positive definiteness: start the covariance over
            self.p = _identity(_P0)


def _identity(scale: float) -> list[list[float]]:
    return [[scale if i == j else 0.0 for j in range(FEATURES)] for i in range(FEATURES)]
