"""RealEngine(prompt_tokens=...): real prompt token ids by request id, on CPU with Tiny-OPT (HF-equal greedy
outputs on the given ids, beam search on them, synthetic ids for requests left out, one-line errors)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
pytest.importorskip("transformers")

from tests.test_engine import hf_model, reference_beam_search, scenario  # noqa: E402

from kvsim.engine.engine import RealEngine  # noqa: E402
from kvsim.errors import KvsimError  # noqa: E402


@pytest.fixture(scope="module")
def models():
    return hf_model("tiny-opt")


def given_ids(sc, vocab: int = 1000) -> dict[int, list[int]]:
    """Distinct, deterministic ids per request, of each request's prompt length."""
    from kvsim.build import setup_run
    reqs = setup_run(sc, simulator=False).requests
    return {r.request_id: [(7 * r.request_id + 3 * j + 5) % vocab for j in range(r.prompt_len)] for r in reqs}


def test_greedy_runs_on_the_given_ids(models):
    hf, ours, _ = models
    sc = scenario("tiny-opt")
    ids = given_ids(sc, hf.config.vocab_size)
    ids.pop(0)                                   # request 0 keeps its synthetic ids
    res = RealEngine(sc, model=ours, prompt_tokens=ids).run()
    plain = RealEngine(sc, model=ours).run()
    assert res.outputs[0] == plain.outputs[0]
    for rid, prompt in ids.items():
        spec = next(r for r in res.requests.itertuples() if r.request_id == rid)
        with torch.no_grad():
            ref = hf.generate(torch.tensor([prompt]), max_new_tokens=spec.output_len, min_new_tokens=spec.output_len,
                              do_sample=False, eos_token_id=None, pad_token_id=0)
        assert res.outputs[rid][0] == ref[0, len(prompt):].tolist(), rid
    assert any(res.outputs[r] != plain.outputs[r] for r in ids)


def test_beam_search_on_the_given_ids(models):
    hf, ours, _ = models
    sc = scenario("tiny-opt", **{"workload.beam_width": 3, "workload.num_requests": 3})
    ids = given_ids(sc, hf.config.vocab_size)
    eng = RealEngine(sc, model=ours, prompt_tokens=ids)
    res = eng.run()
    assert eng.kv.blocks_in_use() == 0
    for spec in eng.setup.requests:
        ref = reference_beam_search(hf, ids[spec.request_id], 3, spec.output_len)
        assert res.outputs[spec.request_id] == [b for _, b in ref]
    assert 0 < res.summary["sharing_saved_frac"] < 1


@pytest.mark.parametrize("ids, over, match", [
    ({99: [1, 2]}, {}, "request id 99 is not in the workload"),
    ({0: [1]}, {"workload.prompt_len_range": [3, 3]}, "request 0: 1 ids but its prompt_len is 3"),
    ({0: [1, 2, 10 ** 6]}, {"workload.prompt_len_range": [3, 3]}, "request 0: id 1000000 is outside the vocabulary"),
    ({0: ["a", "b", "c"]}, {"workload.prompt_len_range": [3, 3]}, "request 0: .* is not a list of integer token ids"),
    ({0: [1, 2, 3]}, {"workload.prompt_len_range": [3, 3], "engine.enable_prefix_caching": True},
     "not with engine.enable_prefix_caching"),
])
def test_bad_prompt_tokens_name_the_field(models, ids, over, match):
    with pytest.raises(KvsimError, match=match) as e:
        RealEngine(scenario("tiny-opt", **over), model=models[1], prompt_tokens=ids)
    assert e.value.field == "prompt_tokens" and "\n" not in str(e.value)
