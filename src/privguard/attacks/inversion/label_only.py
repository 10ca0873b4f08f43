"""Label-only model inversion by boundary repulsion in the generative prior's latent space.

Kahla, Chen, Just, Jia, "Label-Only Model Inversion Attacks via Boundary Repulsion",
CVPR 2022 (BREP-MI).

Threat model. The attacker sees only the predicted label for each query — no confidences, no
gradients — which is what a deployment that hides scores (or a "label-only" output policy)
still gives away. Like generative model inversion, it learns a generative prior from unlabelled
public data of the same population (:mod:`privguard.attacks.inversion.generative`). For each
class it first samples the prior until the target labels a generated record as the class. It then
walks through the latent space away from the class's decision boundary: it queries the labels of
``points`` codes on a sphere of radius ``R`` around the current code, and steps away from those
the target labels otherwise (repulsion). When every point on the sphere is labelled as the class,
the current code sits at least ``R`` from the boundary in those directions, so the sphere grows.
The end point is a record the model places deep inside the class: a label-only estimate of what
the model considers the class to look like. Whether it reveals *training records* rather than the
class is answered by the auditor (``member_closeness``), not by this attack.

Departures from the paper, stated for a reviewer: the prior is a small autoencoder with a Gaussian
over its codes rather than a GAN, so codes are kept inside the ball holding 99% of the auxiliary
codes instead of being clipped to a box; the step is ``R / 3`` along the normalised repulsion
direction, and a step is taken only after one more query confirms the new code keeps the class
label (so the walk never leaves the class). Every label query counts; each class spends at most
``queries_per_class`` (its share of the shared initial pool included), and a spent budget ends
the walk with the last confirmed code and a note.
"""

from __future__ import annotations

import numpy as np

from privguard.attacks.base import InversionGuesses, Knowledge, Progress
from privguard.attacks.inversion.generative import GenerativePrior
from privguard.attacks.inversion.prior import PriorAttackBase, project_ball, target_classes
from privguard.attacks.registry import register
from privguard.errors import BudgetExhaustedError
from privguard.oracle import Access, Oracle

PAPER_BREP = (
    "Kahla et al., Label-Only Model Inversion Attacks via Boundary Repulsion, CVPR 2022 "
    "(prior after Zhang et al., CVPR 2020)"
)


@register
class LabelOnlyInversion(PriorAttackBase):
    """BREP-MI: boundary repulsion on spheres in the prior's latent space, labels only."""

    name = "label-only-inversion"
    needs = Access.LABEL
    paper = PAPER_BREP
    description = (
        "Searches a generative prior (trained on the attacker's auxiliary data) using only "
        "predicted labels: walks away from the class boundary by querying points on a growing "
        "sphere."
    )

    def __init__(
        self,
        *,
        queries_per_class: int = 2000,
        pool_per_class: int = 20,
        points: int = 32,
        radius: float = 0.5,
        growth: float = 1.3,
        latent_dim: int = 16,
        prior_hidden: tuple[int, ...] = (256,),
        prior_epochs: int = 30,
    ) -> None:
        super().__init__(
            latent_dim=latent_dim,
            prior_hidden=prior_hidden,
            prior_epochs=prior_epochs,
            prior_weight=0.0,
        )
        self.queries_per_class = queries_per_class
        self.pool_per_class = pool_per_class
        self.points = points
        self.radius = radius
        self.growth = growth

    def run(
        self, oracle: Oracle, knowledge: Knowledge, progress: Progress | None = None
    ) -> InversionGuesses:
        self.check_access(oracle)
        classes = target_classes(oracle, knowledge)
        prior = self.prior(knowledge, progress)
        notes = [self.prior_note(prior)]
        rng = np.random.default_rng(knowledge.seed)
        n_c = len(classes)
        spent = np.zeros(n_c, dtype=np.int64)

        # A shared pool of prior samples, labelled once: each class starts from one of its own.
        n_pool = self.pool_per_class * n_c
        limited = oracle.remaining is not None and oracle.remaining < self.queries_per_class * n_c
        if oracle.remaining is not None:
            n_pool = min(n_pool, max(0, oracle.remaining))
        u_pool = prior.sample(n_pool, rng)
        y_pool = oracle.labels(prior.decode_numpy(u_pool)) if n_pool else np.zeros(0, np.int64)
        spent += n_pool // n_c
        spent[: n_pool % n_c] += 1
        exhausted = n_pool == 0

        out = prior.sample(n_c, rng)  # fallback for classes never found
        found = np.zeros(n_c, dtype=bool)
        radii = np.zeros(n_c)
        for i, c in enumerate(classes):
            quota = self.queries_per_class - int(spent[i])
            if oracle.remaining is not None:
                quota = min(quota, oracle.remaining // (n_c - i))
            hits = np.flatnonzero(y_pool == c)
            start = u_pool[hits[0]] if len(hits) else None
            if start is None and not exhausted:
                start, used, exhausted = self._find(oracle, prior, int(c), quota // 2, rng)
                spent[i] += used
                quota -= used
            if start is not None:
                found[i] = True
                u, r, used, exhausted = self._repel(oracle, prior, int(c), start, quota, rng)
                out[i], radii[i] = u, r
                spent[i] += used
            if progress is not None:
                progress(f"{self.name}: classes", i + 1, n_c)

        if not found.all():
            missing = ", ".join(str(int(c)) for c in classes[~found])
            notes.append(
                f"no prior sample was labelled as class(es) {missing} within the budget; their "
                "reconstructions are unsearched prior samples"
            )
        if limited or exhausted:
            notes.append(
                f"query budget of {oracle.budget} below {self.queries_per_class} per class: the "
                "walk stopped early with the last code the target labelled as the class"
            )
        if found.any():
            notes.append(
                f"boundary repulsion with {self.points} label queries per sphere; largest "
                "sphere found entirely inside the class (whitened latent units, prior radius "
                f"{prior.radius_:.1f}): median {np.median(radii[found]):.2f}, "
                f"min {radii[found].min():.2f}"
            )
        return InversionGuesses(
            reconstructions=prior.decode_numpy(out),
            labels=classes.copy(),
            notes=notes,
            queries_per_class=[int(q) for q in spent],
        )

    def _find(
        self, oracle: Oracle, prior: GenerativePrior, c: int, quota: int, rng: np.random.Generator
    ) -> tuple[np.ndarray | None, int, bool]:
        """Sample the prior until the target labels a decoded code ``c``."""
        used = 0
        batch = max(1, self.pool_per_class)
        while used + batch <= quota:
            u = prior.sample(batch, rng)
            try:
                y = oracle.labels(prior.decode_numpy(u))
            except BudgetExhaustedError:
                return None, used, True
            used += batch
            hits = np.flatnonzero(y == c)
            if len(hits):
                return u[hits[0]], used, False
        return None, used, False

    def _repel(
        self,
        oracle: Oracle,
        prior: GenerativePrior,
        c: int,
        u0: np.ndarray,
        quota: int,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, float, int, bool]:
        """Walk from ``u0`` (labelled ``c``) away from the boundary; returns the last confirmed
        code, the last sphere radius that was entirely inside the class, queries used and
        whether the budget ran out."""
        d = prior.latent_dim
        u = u0.astype(np.float64).copy()
        r, inside_r = self.radius, 0.0
        r_max = 2.0 * prior.radius_  # beyond the ball's diameter a sphere says nothing new
        used = 0
        while used + self.points + 1 <= quota and r <= r_max:
            dirs = rng.standard_normal((self.points, d))
            dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
            sphere = project_ball(u + r * dirs, prior.radius_).astype(np.float32)
            try:
                y = oracle.labels(prior.decode_numpy(sphere))
            except BudgetExhaustedError:
                return u.astype(np.float32), inside_r, used, True
            used += self.points
            outside = y != c
            if not outside.any():
                inside_r = max(inside_r, r)
                r *= self.growth
                continue
            repulsion = -dirs[outside].sum(axis=0) / self.points
            norm = np.linalg.norm(repulsion)
            if norm < 1e-12:
                continue
            step = project_ball((u + (r / 3.0) * repulsion / norm)[None], prior.radius_)[0]
            try:
                y_step = oracle.labels(prior.decode_numpy(step[None].astype(np.float32)))
            except BudgetExhaustedError:
                return u.astype(np.float32), inside_r, used, True
            used += 1
            if int(y_step[0]) == c:
                u = step
        return u.astype(np.float32), inside_r, used, False
