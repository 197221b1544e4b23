"""Reader for vLLM's ShareGPT dump (``ShareGPT_V3_unfiltered_cleaned_split.json``).

The file is a JSON list of ``{"id": ..., "conversations": [{"from": "human" |
"gpt", "value": text}, ...]}``. Like vLLM's ``benchmark_serving.py`` we take one
(prompt, output) pair per conversation: the first ``human`` turn is the prompt
and the turn right after it is the output, if that turn is from ``gpt``
(vLLM takes turns 0 and 1 blindly; for the real file this is the same thing
almost always). Conversations with fewer than 2 turns, or without such a pair,
are skipped.

Token counts: no tokenizer is available offline, so by default a text of ``c``
characters counts as ``round(c * tokens_per_char)`` tokens (default 0.25, the
usual ~4 characters per English BPE token). If ``tokenizer`` names a Hugging
Face tokenizer and ``transformers`` is importable, real token counts are used.

Filter (vLLM's ``sample_sharegpt_requests``): pairs with prompt < 4 or output < 4
tokens are dropped ("too short"), and pairs with prompt > 1024 or prompt +
output > 2048 tokens are dropped ("too long"). The model max-length cap is
applied later, by ``build_workload``.
"""
from __future__ import annotations

import json
import os

import numpy as np

from kvsim.errors import KvsimError

MIN_TOKENS = 4
MAX_PROMPT_TOKENS = 1024
MAX_TOTAL_TOKENS = 2048
FIELD = "workload.path"

_cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _pairs(path: str) -> list[tuple[str, str]]:
    """(prompt text, output text) per usable conversation, in file order."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise KvsimError(FIELD, f"{path}: file not found; allowed: vLLM's ShareGPT JSON file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KvsimError(FIELD, f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    except json.JSONDecodeError as e:
        raise KvsimError(FIELD, f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except (ValueError, RecursionError) as e:
        raise KvsimError(FIELD, f"{path}: cannot read ({e})") from None
    if not isinstance(data, list):
        raise KvsimError(FIELD, f"{path}: top level is a {type(data).__name__}; allowed: a list of conversations")
    pairs = []
    for i, conv in enumerate(data):
        turns = conv.get("conversations") if isinstance(conv, dict) else None
        if not isinstance(turns, list):
            raise KvsimError(FIELD, f"{path}: entry {i} has no 'conversations' list; allowed: "
                             '{"id": ..., "conversations": [{"from": ..., "value": ...}, ...]}')
        for j, t in enumerate(turns):
            if not (isinstance(t, dict) and isinstance(t.get("from"), str) and isinstance(t.get("value"), str)):
                raise KvsimError(FIELD, f"{path}: entry {i} turn {j} is not {{\"from\": str, \"value\": str}}")
        if len(turns) < 2:
            continue
        k = next((k for k, t in enumerate(turns) if t["from"] == "human"), None)
        if k is None or k + 1 >= len(turns) or turns[k + 1]["from"] != "gpt":
            continue
        pairs.append((turns[k]["value"], turns[k + 1]["value"]))
    return pairs


def _count_tokens(texts: list[str], tokens_per_char: float, tokenizer: str | None) -> np.ndarray:
    if tokenizer is None:
        chars = np.fromiter((len(t) for t in texts), dtype=np.float64, count=len(texts))
        return np.rint(chars * tokens_per_char).astype(np.int64)
    try:
        from transformers import AutoTokenizer  # optional dependency
    except ImportError:
        raise KvsimError("workload.tokenizer", f"{tokenizer!r} needs the `transformers` package; "
                         "allowed: null (character heuristic) when it is not installed") from None
    import logging
    import warnings
    quiet = [logging.getLogger(n) for n in ("huggingface_hub", "transformers")]
    levels = [q.level for q in quiet]
    for q in quiet:                     # (their retry warnings would break the one-line error)
        q.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = AutoTokenizer.from_pretrained(tokenizer)
    except Exception as e:  # noqa: BLE001 - any load failure is bad input
        raise KvsimError("workload.tokenizer", f"cannot load {tokenizer!r}: {e}".splitlines()[0]) from None
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    return np.array([len(ids) for ids in tok(texts).input_ids], dtype=np.int64)


def load_sharegpt(
    path: str, *, tokens_per_char: float = 0.25, tokenizer: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Filtered (prompt_lens, output_lens) int64 arrays, one entry per kept conversation, file order.

    Results are cached per (path, file mtime/size, tokens_per_char, tokenizer).
    Raises KvsimError("workload.path", ...) for a missing/unreadable/malformed
    file or when no conversation survives the filter.
    """
    try:
        st = os.stat(path)
        key = (os.path.abspath(path), st.st_mtime_ns, st.st_size, tokens_per_char, tokenizer)
    except OSError:
        key = None
    if key is not None and key in _cache:
        p, o = _cache[key]
        return p.copy(), o.copy()
    pairs = _pairs(path)
    prompt = _count_tokens([p for p, _ in pairs], tokens_per_char, tokenizer)
    output = _count_tokens([o for _, o in pairs], tokens_per_char, tokenizer)
    keep = (
        (prompt >= MIN_TOKENS) & (output >= MIN_TOKENS)
        & (prompt <= MAX_PROMPT_TOKENS) & (prompt + output <= MAX_TOTAL_TOKENS)
    )
    prompt, output = prompt[keep], output[keep]
    if len(prompt) == 0:
        raise KvsimError(FIELD, f"{path}: no conversation left after filtering ({len(pairs)} pairs read; "
                         f"allowed: prompt and output >= {MIN_TOKENS} tokens, prompt <= {MAX_PROMPT_TOKENS}, "
                         f"prompt+output <= {MAX_TOTAL_TOKENS})")
    if key is not None:
        _cache[key] = (prompt, output)
    return prompt.copy(), output.copy()


def sample_sharegpt(
    rng: np.random.Generator, prompt_lens: np.ndarray, output_lens: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``size`` (prompt, output) pairs with ``rng``.

    Without replacement (a random permutation, like vLLM's shuffle) when
    ``size`` <= the pool; otherwise with replacement (uniform, independent).
    """
    pool = len(prompt_lens)
    if size <= pool:
        idx = rng.permutation(pool)[:size]
    else:
        idx = rng.integers(0, pool, size=size)
    return prompt_lens[idx], output_lens[idx]
