"""How ``kvsim paper`` prices its steps: the roofline (optionally a preset) or a measured profile.

:class:`PaperCost` turns the command's ``--preset`` / ``--profile`` / ``--gpu`` / ``--rate-scale``
into scenario overrides, checks a profile before any work (one line naming the field on a profile
the paper scenarios cannot use) and says which block sizes each figure can sweep.

A measured profile holds only the block sizes it was calibrated at, so Fig. 18b and Fig. 19 sweep
the intersection of their grids with the profile's sizes; a figure left with no size is skipped and
``SUMMARY.md`` says so. A measured card is faster than the roofline's A100, so the same request
rates would leave every system unloaded: ``--rate-scale`` multiplies every request rate of every
experiment (the Fig. 13 reading rates included) and is written in the summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kvsim.errors import KvsimError

@dataclass
class PaperCost:
    preset: str | None = None
    profile: str | None = None
    gpu: str | None = None
    rate_scale: float = 1.0
    block_sizes: list[int] | None = field(default=None, init=False)    # the profile's, None = any
    card: str | None = field(default=None, init=False)

    def __post_init__(self):
        from kvsim.cost.presets import get_preset
        get_preset(self.preset)                        # an unknown preset fails before any work
        if not (isinstance(self.rate_scale, (int, float)) and 0 < self.rate_scale < 1e4):
            raise KvsimError("--rate-scale", f"got {self.rate_scale!r}, expected a positive number")
        if self.preset and self.profile:
            raise KvsimError("--preset", "a preset changes roofline overheads; a measured profile has its own")
        if self.profile:
            self._check_profile()

    def _check_profile(self) -> None:
        from kvsim.build import setup_run
        from kvsim.config import load_scenario
        from kvsim.cost.profile import load_profile
        from kvsim.paper import PAPER
        if not Path(self.profile).is_file():
            raise KvsimError("--profile", f"{self.profile} is not a file")
        try:
            p = load_profile(self.profile)
            # the paper's base scenario, priced by the profile: a model, dtype or block-size mismatch fails here
            setup_run(load_scenario(PAPER / "fig12_opt13b_sharegpt_paged.yaml", self.overrides()))
        except KvsimError as err:
            if err.field in ("profile", "cost.profile", "engine.block_size"):
                raise KvsimError("--profile", err.message) from None
            raise
        self.block_sizes = sorted(p.block_sizes)
        self.card = p.meta.get("gpu") if isinstance(p.meta, dict) else None

    def prices(self, scenario) -> bool:
        """Whether this cost model can price ``scenario`` (a profile holds one model: Fig. 16 runs LLaMA-13B)."""
        if not self.profile:
            return True
        from kvsim.build import setup_run
        from kvsim.config import load_scenario
        try:
            setup_run(load_scenario(scenario, self.overrides()))
        except KvsimError as err:
            if err.field in ("cost.profile", "engine.block_size"):
                return False
            raise
        return True

    def overrides(self) -> list[str]:
        from kvsim.cost.presets import get_preset
        p = get_preset(self.preset)
        out = p.overrides() if p else []
        if self.profile:
            # the scenarios' GPU (A100-40GB, or --gpu) sets the memory, the profile's card the step times
            out += ["cost.model=calibrated", f"cost.profile={Path(self.profile).resolve()}",
                    "cost.profile_other_gpu=true"]
        if self.gpu:
            out.append(f"gpu={self.gpu}")
        return out

    def rates(self, rates):
        """``rates`` (a number or a list) times the rate scale."""
        if isinstance(rates, (list, tuple)):
            return [round(r * self.rate_scale, 6) for r in rates]
        return round(rates * self.rate_scale, 6)

    def sizes(self, grid: list[int]) -> list[int]:
        """The block sizes of ``grid`` this cost model can price (all of them on the roofline)."""
        return list(grid) if self.block_sizes is None else [b for b in grid if b in self.block_sizes]

    def describe(self) -> str:
        from kvsim.cost.presets import get_preset
        if self.profile:
            txt = (f"measured profile `{self.profile}` ({self.card or 'card not recorded'}; block sizes "
                   f"{self.block_sizes}), GPU memory of {self.gpu or 'the scenarios (A100-40GB)'}")
        else:
            p = get_preset(self.preset)
            txt = p.describe() if p else "default roofline (no preset)"
        if self.rate_scale != 1:
            txt += f"; every request rate x{self.rate_scale:g} (`--rate-scale`)"
        return txt

