"""Cost models: seconds per engine iteration (StepPlan) and per KV transfer.

* :class:`CostModel` — the abstract contract (see :mod:`kvsim.cost.base`).
* :class:`RooflineCostModel` / :class:`RooflineParams` — analytical roofline from
  the model & GPU catalogue (:mod:`kvsim.cost.roofline`).
"""
from kvsim.cost.base import CostModel, is_decode_only
from kvsim.cost.roofline import RooflineCostModel, RooflineParams

__all__ = ["CostModel", "RooflineCostModel", "RooflineParams", "is_decode_only"]
