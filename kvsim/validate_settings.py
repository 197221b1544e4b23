"""The profile a validation prices with, and the settings that make the engine and the simulator run as it was
measured: which profile a scenario picks (:func:`pick_profile`), the engine settings a live run needs
(:func:`profile_sets`, :func:`card_sets`, :func:`check_graph_mode`) and those that make the simulator price a saved
engine run as it ran (:func:`replay_sets`).
"""
from __future__ import annotations


def _profile_doc(path: str) -> dict:
    from kvsim.errors import KvsimError
    from kvsim.textio import read_json
    doc = read_json(path, "--profile", "profile JSON file (kvsim calibrate)")
    if not isinstance(doc, dict):
        raise KvsimError("--profile", f"{path}: expected a JSON object written by kvsim calibrate")
    return doc


def _checked_profile_doc(path: str) -> dict:
    """:func:`_profile_doc`, checked to be a well-formed profile (:class:`kvsim.cost.profile.Profile`); a one-line
    KvsimError naming --profile, the file and the key otherwise."""
    from kvsim.calibrate.merge import check_profile
    return check_profile(_profile_doc(path), path, "--profile")


def pick_profile(scenario_path: str, profiles: list[str], overrides: list[str] | None = None) -> str:
    """The profile measured for the scenario's model (profiles name their model), preferring one that
    holds the scenario's block size (several files of one model may hold different block sizes)."""
    import kvsim
    from kvsim.calibrate.merge import block_sizes
    from kvsim.catalogue import get_model
    from kvsim.errors import KvsimError
    sc = kvsim.load_scenario(scenario_path, overrides)
    want = get_model(sc.model).name
    docs = {p: _checked_profile_doc(p) for p in profiles}        # every one well-formed, not only the one used
    mine = [p for p in profiles if docs[p]["model"] == want]
    for p in mine:
        if sc.engine.block_size in block_sizes(docs[p]):
            return p
    if mine:
        return mine[0]        # the cost model then names the missing block size in one line
    raise KvsimError("--profile", f"no profile for {want} among {', '.join(profiles)}")


def check_graph_mode(profile: str, cuda_graphs: bool) -> None:
    """A profile timed its decode steps with CUDA graphs or eagerly; the engine must run the same way."""
    from kvsim.errors import KvsimError
    meta = _profile_doc(profile).get("meta", {})
    measured = bool(meta.get("cuda_graphs", False)) if isinstance(meta, dict) else False
    if measured != bool(cuda_graphs):
        how = "with" if measured else "without"
        raise KvsimError("runtime.cuda_graphs", f"{profile} was measured {how} CUDA graphs; run the engine the "
                                                f"same way (--set runtime.cuda_graphs={str(measured).lower()})")


def replay_sets(eng_doc: dict) -> list[str]:
    """Settings that make the simulator price the saved engine run as it ran: the prefill/mixed graph ladder it
    captured (runs from before ``runtime.cuda_graph_prefill_ladder`` existed captured v1) and the sizes it skipped
    (``runtime.cuda_graph_prefill_skip``: routed past when its graphs were captured; none before routing), and whether
    it overlapped steps (``runtime.async_scheduling``, ``runtime.async_prompt_steps``). A user's explicit
    ``--set`` of the same field comes first and is overridden, so the replay stays faithful to the records."""
    from kvsim.graph_sizes import ladder_of
    info = eng_doc.get("engine") if isinstance(eng_doc.get("engine"), dict) else {}
    sizes = info.get("cuda_graph_prefill_tokens")
    if isinstance(sizes, list) and any(isinstance(t, bool) or not isinstance(t, int) for t in sizes):
        from kvsim.errors import KvsimError
        raise KvsimError("--replay", f"engine.cuda_graph_prefill_tokens of the engine records: expected whole "
                                     f"numbers, got {sizes[:4]!r}")
    name = ladder_of([int(t) for t in sizes]) if isinstance(sizes, list) and sizes else None
    skip = info.get("cuda_graph_prefill_skip") or []       # runs from before routing recorded none and skipped none
    if not isinstance(skip, list) or any(isinstance(t, bool) or not isinstance(t, int) for t in skip):
        from kvsim.errors import KvsimError
        raise KvsimError("--replay", f"engine.cuda_graph_prefill_skip of the engine records: expected a list of "
                                     f"whole numbers, got {str(skip)[:40]}")
    route = ["runtime.cuda_graph_prefill_route=false",
             f"runtime.cuda_graph_prefill_skip=[{', '.join(str(int(t)) for t in skip)}]"]
    # which steps it overlapped (kvsim.overlap): as its scenario records, stepped where it predates the settings
    rt = (eng_doc.get("scenario") or {}).get("runtime") if isinstance(eng_doc.get("scenario"), dict) else None
    rt = rt if isinstance(rt, dict) else {}
    mode = [f"runtime.{k}={str(rt.get(k) is True).lower()}" for k in ("async_scheduling", "async_prompt_steps")]
    return ([f"runtime.cuda_graph_prefill_ladder={name}"] if name else []) + route + mode


def profile_sets(meta: dict | None) -> list[str]:
    """Engine settings under which ``meta``'s profile was measured, for a live validation to run the engine it
    priced: the prefill/mixed graph ladder, how a mixed step's decode rows were attended and whether the host's
    next step overlapped the GPU's (``serve_loop.py``). Profiles from before these settings existed were measured
    on ladder v1 with the decode rows in the prefill kernel, stepped. Each is set explicitly, so a later change of
    an engine default cannot change what a profile is compared with. They go before the user's ``--set``, which
    wins (and is then a like-for-unlike comparison)."""
    from kvsim.cost.profile import LEGACY_ENGINE_MODE
    meta = meta if isinstance(meta, dict) else {}
    ladder = meta.get("prefill_ladder", LEGACY_ENGINE_MODE["prefill_ladder"])
    flag = lambda key: str(bool(meta.get(key, LEGACY_ENGINE_MODE[key]))).lower()     # noqa: E731
    return [f"runtime.cuda_graph_prefill_ladder={ladder}", f"runtime.mixed_decode_kernel={flag('mixed_decode_kernel')}",
            f"runtime.cuda_graph_prefill_route={flag('prefill_route')}",
            f"runtime.async_scheduling={flag('async_scheduling')}", f"runtime.swap_staged={flag('swap_staged')}",
            f"runtime.async_prompt_steps={flag('async_prompt_steps')}", f"runtime.pad_logits={flag('pad_logits')}",
            f"runtime.mixed_decode_split={flag('mixed_decode_split')}"]


def card_sets(profile: str) -> list[str]:
    """``gpu=<the profile's card>`` where the catalogue knows it: the engine ran on the card that measured the
    profile, whatever GPU the scenario names (scenarios/validation v01-v14 name h100-80gb and were run on an H200),
    and the simulator prices it as that card (a profile measured on another card than the scenario's GPU is
    refused, :func:`kvsim.cost.profile_card.check_card`). A user's ``--set gpu=...`` comes after it and wins."""
    from kvsim.catalogue import get_gpu
    from kvsim.errors import KvsimError
    card = _checked_profile_doc(profile)["meta"].get("gpu")
    try:
        return [f"gpu={get_gpu(card).name}"] if isinstance(card, str) and card.strip() else []
    except KvsimError:
        return []              # a card the catalogue does not know: the scenario's GPU stays
