"""What beam search's sampling adds to a step, for :class:`kvsim.cost.calibrated.CalibratedCostModel`.

The whole-step grids are timed with greedy sampling. A step with beam-search rows instead makes one beam call
per beam width (log-softmax, the beams' scores, a top-k over width × vocabulary per group) and one first-step
call for the beam groups whose prompt ended; the greedy draw is then made only if some row draws
independently. The profile's ``sampling`` table (:mod:`kvsim.calibrate.sampling`) times each call alone; the
scheduler counts the rows (``StepPlan.beam_rows`` / ``beam_first`` / ``draw_rows``) when the simulator asks
(``Scheduler.count_sampling``, set from :attr:`SamplingPriceMixin.prices_sampling`).
"""
from __future__ import annotations

from kvsim.core.plan import StepPlan
from kvsim.cost.profile import interp1


class SamplingPriceMixin:
    """Reads the model's profile ``p`` (its ``sampling`` table, or None)."""

    @property
    def prices_sampling(self) -> bool:
        """Whether :meth:`sampling_extra` reads the plans' sampling counts (the simulator then asks its
        scheduler to fill them: ``Scheduler.count_sampling``)."""
        return self.p.sampling is not None or getattr(self, "_beam", None) is not None

    def sampling_extra(self, plan: StepPlan) -> float:
        """What beam search adds to a step whose grids were timed with greedy sampling (the profile's
        ``sampling`` table; 0 without it or without beams): each beam step over the step's beam rows and each
        first beam step over its groups, less the greedy draw the step then no longer makes."""
        tab = self.p.sampling
        if tab is None or not (plan.beam_rows or plan.beam_first):
            return 0.0
        greedy, beam, first = tab
        t = 0.0
        if plan.beam_rows:
            t += float(interp1(float(plan.beam_rows), *beam))
        if plan.beam_first:
            t += float(interp1(float(plan.beam_first), *first))
        if not plan.draw_rows:
            t -= float(interp1(float(plan.beam_rows + plan.beam_first), *greedy))
        return max(0.0, t)
