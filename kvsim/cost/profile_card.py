"""Which card a profile was measured on, against a scenario's GPU: a profile's step times are its card's, so a
scenario naming another GPU is refused (``cost.profile_other_gpu`` allows it as a what-if)."""
from __future__ import annotations

from kvsim.errors import KvsimError


def chip_key(name: str) -> str:
    """``"NVIDIA H200"`` / ``"H200-141GB"`` -> ``"h200"``: the chip, without vendor or memory size."""
    words = str(name).lower().replace("nvidia", " ").replace("-", " ").split()
    return words[0] if words else ""


def card_matches(card, gpu: str) -> bool | None:
    """Whether a profile measured on ``card`` (its ``meta.gpu``, the device name: ``"NVIDIA H200"``) was measured
    on the catalogue GPU ``gpu``: by catalogue identity where the catalogue knows the card (``get_gpu``'s aliases),
    else by chip where the chip is a catalogue GPU's; None for a card the catalogue cannot place (a synthetic or
    unlisted one, or none recorded), which cannot be compared."""
    from kvsim.catalogue import get_gpu, list_gpus
    want = get_gpu(gpu).name
    if not isinstance(card, str) or not card.strip():
        return None
    try:
        return get_gpu(card).name == want
    except KvsimError:
        pass
    chip = chip_key(card)
    if chip and chip in {chip_key(g) for g in list_gpus()}:
        return chip == chip_key(want)
    return None


def check_card(profile, gpu: str) -> None:
    """A KvsimError("profile", ...) naming both GPUs when ``profile`` was measured on another card than the
    scenario's ``gpu`` (:func:`card_matches`): its step times are that card's, whatever GPU the scenario names."""
    card = profile.meta.get("gpu")
    if card_matches(card, gpu) is False:
        from kvsim.catalogue import get_gpu
        try:
            key = f" (gpu={get_gpu(card).name.lower()})"
        except KvsimError:
            key = ""
        raise KvsimError("profile", f"{profile.source} was measured on {card!r}, the scenario's gpu is "
                                    f"{get_gpu(gpu).name}; its step times are that card's: set the scenario's gpu "
                                    f"to the card it was measured on{key} or use a profile measured on {gpu}")
