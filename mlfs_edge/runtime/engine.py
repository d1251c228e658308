"""``Engine``: the Python face of the C++ engine over one ``.mlfs`` file — an encoder
(mlfs_edge._core.Engine: ``run``) or a decoder (mlfs_edge._core.Decoder: ``generate``, ``stream``,
``logits``), told apart by the file's model kind.

Decoders: prompts are token ids (a list or a 1-D int64/int32 array); ``generate`` returns the new
ids, ``stream`` yields them as they are produced (the GIL is released while each one is computed)
and reports prefill / decode tokens per second afterwards.

Inputs are numpy arrays used in place (no copy): ``input_ids`` and ``attention_mask`` of shape
[batch, seq], both int64 or both int32 (what tokenizers and torch produce; other dtypes are rejected
with a TypeError rather than converted), C-contiguous; the mask holds 1 (token) and 0 (padding) only,
any other value is a ValueError naming its position. The output is float32 [batch, num_labels]
logits for a packed classifier, else the pooled embedding [batch, hidden] (L2-normalised when the
file says so); ``embed`` tokenizes texts and returns what the packed sentence-transformers pipeline
would. Token type ids are 0 (single-segment input). The GIL is released while the engine computes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlfs_edge import _core
from mlfs_edge.assets import cache_dir
from mlfs_edge.config import ArchSpec, SubnetConfig
from mlfs_edge.runtime.format import HEADER_SIZE, atomic_write_text, model_kind

PackedFileError = _core.PackedFileError


def cpu_model() -> str:
    """The CPU's model name (the key latency profiles are cached under)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Engine:
    """A loaded packed supernet; run any of its sub-networks with ``run(..., subnet=cfg)``."""

    def __init__(self, core: Any) -> None:
        self._core = core
        self.kind = "decoder" if isinstance(core, _core.Decoder) else "encoder"
        self.metadata = _parse_metadata(core.metadata_json)
        self.arch = _arch_from(self.metadata, core.dims)

    @classmethod
    def load(cls, path: str | os.PathLike, verify_checksum: bool = True) -> Engine:
        """mmap and validate `path`; raises PackedFileError (a ValueError) naming what is wrong."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"packed model {path} does not exist (write one with `mlfs-edge pack`)")
        with open(path, "rb") as f:
            kind = model_kind(f.read(HEADER_SIZE))
        core = _core.Decoder if kind == "decoder" else _core.Engine
        return cls(core.load(str(path), verify_checksum))

    @classmethod
    def from_bytes(cls, data: bytes, verify_checksum: bool = True) -> Engine:
        """Load a packed file held in memory (same validation as ``load``)."""
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        core = _core.Decoder if model_kind(data[:HEADER_SIZE]) == "decoder" else _core.Engine
        return cls(core.from_bytes(data, verify_checksum))

    # --- what the file holds ----------------------------------------------------------------------
    @property
    def dtype(self) -> str:
        return self._core.dtype

    @property
    def labels(self) -> list[str]:
        return list(self.metadata.get("labels") or [])

    @property
    def pooling(self) -> str:
        return self._core.dims.get("pooling", "")

    @property
    def normalize(self) -> bool:
        """Whether the engine L2-normalises the pooled embedding (a sentence-transformers Normalize)."""
        return bool(self._core.dims.get("normalize", False))

    @property
    def sentence_transformers(self) -> dict[str, Any]:
        """What the packed sentence-transformers pipeline does around the engine: {"max_seq_length":
        int | None, "do_lower_case": bool}; empty for a file packed from another folder."""
        recorded = self.metadata.get("sentence_transformers")
        return dict(recorded) if isinstance(recorded, dict) else {}

    @property
    def file_size(self) -> int:
        return self._core.file_size

    @property
    def checksum(self) -> int:
        return self._core.checksum

    @property
    def path(self) -> str:
        return self._core.path

    @property
    def output_dim(self) -> int:
        return self._core.output_dim if self.kind == "encoder" else self.arch.vocab_size

    @property
    def max_positions(self) -> int:
        return self._core.dims["max_positions"]

    @property
    def workspace_bytes(self) -> int:
        """Activation buffers allocated so far (sized by the largest batch x seq run)."""
        return self._core.workspace_bytes

    def tokenizer_dir(self) -> Path | None:
        """The tokenizer folder saved next to the file by ``pack(..., tokenizer=...)``, if present."""
        name = self.metadata.get("tokenizer")
        if not name or self.path == "<memory>":
            return None
        path = Path(self.path).parent / name
        return path if path.is_dir() else None

    def __repr__(self) -> str:
        if self.kind == "decoder":
            return (f"Engine({self.path!r}, decoder, dtype={self.dtype}, layers={self.arch.num_layers}, "
                    f"hidden={self.arch.hidden}, heads={self.arch.num_heads}/{self.arch.num_kv_heads} kv)")
        return (f"Engine({self.path!r}, dtype={self.dtype}, layers={self.arch.num_layers}, "
                f"hidden={self.arch.hidden}, pooling={self.pooling}{', normalised' if self.normalize else ''}, "
                f"labels={self.labels})")

    # --- compute ----------------------------------------------------------------------------------
    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
            subnet: SubnetConfig | None = None, threads: int = 1, out: np.ndarray | None = None) -> np.ndarray:
        """Logits [batch, labels] (classifier) or pooled embeddings [batch, hidden] of `subnet`
        (default: the full network). `out`, if given, is a float32 array of that shape written in place."""
        if not isinstance(input_ids, np.ndarray):
            raise TypeError(f"input_ids must be a numpy array, got {type(input_ids).__name__} (use np.asarray "
                            "or tensor.numpy())")
        if attention_mask is None:
            attention_mask = np.ones_like(input_ids)
        elif not isinstance(attention_mask, np.ndarray):
            raise TypeError(f"attention_mask must be a numpy array, got {type(attention_mask).__name__}")
        if self.kind != "encoder":
            raise ValueError(f"{self.path} is a decoder (causal LM): use generate() / stream() / logits()")
        _check_threads(threads)
        layers = self._layers(subnet)
        return self._core.run(input_ids, attention_mask, layers, threads, out)

    def token_limit(self, max_length: int | None = None) -> int:
        """How many tokens an input is truncated to: `max_length`, else the recorded
        sentence-transformers max_seq_length, else the model's positions (never more than those)."""
        limit = max_length or self.sentence_transformers.get("max_seq_length") or self.max_positions
        return min(limit, self.max_positions)

    def require_embedder(self) -> None:
        """ValueError (one line) unless this file outputs an embedding: a plain encoder."""
        if self.kind != "encoder":
            raise ValueError(f"{self.path} is a decoder (causal LM); sentence embeddings need an encoder file")
        if self.labels:
            raise ValueError(f"{self.path} is a classifier ({', '.join(self.labels)}): it outputs class logits, not an "
                             "embedding; pack the encoder folder without its head")

    def embed(self, texts: Sequence[str], tokenizer: Any, subnet: SubnetConfig | None = None,
              threads: int = 1, max_length: int | None = None, batch_size: int = 32) -> np.ndarray:
        """float32 [len(texts), hidden]: the sentence embeddings of `texts` as the packed
        sentence-transformers pipeline computes them (lower-casing and truncation as it recorded,
        the file's pooling, normalised when it is) on `subnet`. `tokenizer`: a Hugging Face
        tokenizer. Texts go through the engine `batch_size` at a time, sorted by length so that
        little padding is computed; the rows come back in the order of `texts`."""
        self.require_embedder()
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a non-empty list of strings")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        limit = self.token_limit(max_length)
        if self.sentence_transformers.get("do_lower_case"):
            texts = [t.lower() for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.output_dim), np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in rows], truncation=True, max_length=limit, padding=True,
                            return_tensors="np")
            ids = np.ascontiguousarray(enc["input_ids"], np.int64)
            mask = np.ascontiguousarray(enc["attention_mask"], np.int64)
            out[rows] = self.run(ids, mask, subnet=subnet, threads=threads)
        return out

    # --- decoders -----------------------------------------------------------------------------
    def _require_decoder(self) -> None:
        if self.kind != "decoder":
            raise ValueError(f"{self.path} is an encoder: use run(); generation needs a decoder file")

    @property
    def eos_token_ids(self) -> list[int]:
        eos = self.metadata.get("eos_token_id")
        ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        return [int(i) for i in ids]

    def logits(self, ids: Sequence[int] | np.ndarray, subnet: SubnetConfig | None = None, threads: int = 1,
               cache_dtype: str = "fp32", vocab: int | None = None) -> np.ndarray:
        """float32 [n, vocab]: the next-token logits at every position of `ids` (one prefill). With
        `vocab`, only the first `vocab` tokens of the file's vocabulary order are scored (a multiple
        of 32; the others are -inf): what a speculative draft with an elastic head sees."""
        self._require_decoder()
        _check_threads(threads)
        return self._core.logits(_token_array(ids), self._layers(subnet), threads, cache_dtype, vocab or 0)

    @property
    def vocab_ordered(self) -> bool:
        """Whether the file stores its vocabulary most frequent first (``pack(vocab_order=...)``)."""
        return len(self._core.vocab_order) > 0

    def stream(self, prompt_ids: Sequence[int] | np.ndarray, subnet: SubnetConfig | None = None,
               max_new_tokens: int = 32, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
               repetition_penalty: float = 1.0, seed: int = 0, stop_tokens: Iterable[int] | None = None,
               threads: int = 1, cache_dtype: str = "fp32", draft: SubnetConfig | None = None, draft_k: int = 4,
               draft_k_max: int = 8, adaptive: bool = True, draft_vocab: int | None = None) -> TokenStream:
        """An iterator over the new token ids of `subnet` continuing `prompt_ids`, computed one at a
        time in C++ (greedy at temperature 0, else temperature / top-k / top-p sampling, seeded).
        Stops after `max_new_tokens`, after a stop token (default: the model's end-of-sequence ids;
        the stop token is yielded) or at the model's last position. Everything is validated before
        the first token: ValueError for prompts longer than the model's positions, ids outside the
        vocabulary, max_new_tokens < 1 or past the positions, a sub-network that does not fit.

        With `draft` (a smaller sub-network of the same file): self-speculative decoding. The draft
        proposes `draft_k` tokens per round (adapted between 0 and `draft_k_max` to the measured
        acceptance and costs when `adaptive`), `subnet` verifies them in one forward. Greedy output is
        identical to decoding without a draft; sampled tokens keep `subnet`'s distribution.
        `draft_vocab` (a multiple of 32) lets the draft score only that many tokens of the file's
        vocabulary order — its head then costs draft_vocab / vocab of the full one."""
        self._require_decoder()
        _check_threads(threads)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise ValueError(f"top_k must be a non-negative integer (0 = off), got {top_k!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        stops = self.eos_token_ids if stop_tokens is None else [int(t) for t in stop_tokens]
        for name, value in (("draft_k", draft_k), ("draft_k_max", draft_k_max)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
                raise ValueError(f"{name} must be an integer in 1..64, got {value!r}")
        if draft_k > draft_k_max:
            raise ValueError(f"draft_k ({draft_k}) must not exceed draft_k_max ({draft_k_max})")
        core = self._core.start(_token_array(prompt_ids), self._layers(subnet), min(max_new_tokens, 2**62),
                                float(temperature), top_k, float(top_p), float(repetition_penalty), seed, stops,
                                cache_dtype, threads, None if draft is None else self._layers(draft), draft_k,
                                draft_k_max, bool(adaptive), draft_vocab or 0)
        return TokenStream(core)

    def generate(self, prompt_ids: Sequence[int] | np.ndarray, subnet: SubnetConfig | None = None,
                 max_new_tokens: int = 32, **kwargs: Any) -> list[int]:
        """The new token ids (see ``stream`` for the arguments)."""
        return list(self.stream(prompt_ids, subnet=subnet, max_new_tokens=max_new_tokens, **kwargs))

    def _layers(self, subnet: SubnetConfig | None) -> list[tuple[int, int, int]]:
        if subnet is None:
            subnet = SubnetConfig.full(self.arch)
        if not isinstance(subnet, SubnetConfig):
            raise TypeError(f"subnet must be a SubnetConfig, got {type(subnet).__name__} "
                            "(use SubnetConfig.parse or SubnetConfig.from_dict)")
        subnet.validate(self.arch)
        return list(zip(subnet.layers, subnet.heads, subnet.mlp, strict=True))

    # --- budget picker ----------------------------------------------------------------------------
    def _profile_key(self, seq: int, batch: int, threads: int) -> str:
        if self.kind == "decoder":  # ms per decoded token after a `seq`-token prompt
            return f"{cpu_model()}|crc={self.checksum:08x}|decode|prompt={seq}|threads={threads}"
        return f"{cpu_model()}|crc={self.checksum:08x}|seq={seq}|batch={batch}|threads={threads}"

    def _filler_ids(self, n: int, seed: int) -> np.ndarray:
        """Random ordinary token ids for timing (ids 1000-2000 skip special tokens in real vocabularies)."""
        vocab = self.arch.vocab_size
        low, high = (1000, 2000) if vocab > 2000 else (0, vocab)
        return np.random.default_rng(seed).integers(low, high, size=n, dtype=np.int64)

    def _decode_ms_per_token(self, cfg: SubnetConfig, prompt: int, tokens: int, threads: int) -> float:
        """Median wall time between consecutive tokens of one greedy generation (the first tokens,
        which page the slice's weights in, are not counted)."""
        ids = self._filler_ids(prompt, seed=0)
        warm = 4
        stream = self.stream(ids, subnet=cfg, max_new_tokens=warm + tokens, stop_tokens=[], threads=threads)
        stamps = [time.perf_counter() for _ in stream]
        gaps = [(b - a) * 1e3 for a, b in zip(stamps[warm - 1:], stamps[warm:], strict=False)]
        if not gaps:
            raise ValueError(f"{cfg.name}: no token to time (the model has too few positions for a {prompt}-token "
                             "prompt)")
        return statistics.median(gaps)

    def profile(self, candidates: Iterable[SubnetConfig], seq: int = 128, batch: int = 1, threads: int = 1,
                runs: int = 20, use_cache: bool = True, progress: bool = True) -> dict[SubnetConfig, float]:
        """Median latency (ms) of each candidate on this CPU; cached per CPU model and file checksum
        in ``cache_dir()/engine_profiles.json`` so a device measures once.

        Encoders: one forward of `batch` x `seq` tokens, `runs` times. Decoders: the time per decoded
        token after a `seq`-token prompt, the median over `runs` tokens (`batch` is ignored)."""
        from tqdm.auto import tqdm

        candidates = list(candidates)
        if not candidates:
            raise ValueError("profile needs at least one candidate sub-network")
        cache_file = cache_dir() / "engine_profiles.json"
        cache = _read_json(cache_file) if use_cache else {}
        key = self._profile_key(seq, batch, threads)
        table: dict[str, float] = dict(cache.get(key, {}))
        if self.kind == "encoder":
            ids = np.random.default_rng(0).integers(1000, 2000, size=(batch, seq), dtype=np.int64)
            mask = np.ones_like(ids)
            out = np.empty((batch, self.output_dim), np.float32)
        todo = [cfg for cfg in candidates if cfg.to_json() not in table]
        for cfg in tqdm(todo, desc="profile sub-networks", unit="subnet", disable=len(todo) < 8 or not progress):
            name = cfg.to_json()
            if self.kind == "decoder":
                table[name] = self._decode_ms_per_token(cfg, seq, runs, threads)
                continue
            layers = self._layers(cfg)
            for _ in range(3):  # warm-up: page in the slice's weights
                self._core.run(ids, mask, layers, threads, out)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                self._core.run(ids, mask, layers, threads, out)
                times.append((time.perf_counter() - t0) * 1e3)
            table[name] = statistics.median(times)
        if use_cache:
            cache = _read_json(cache_file)  # re-read: another process may have added entries
            cache[key] = {**cache.get(key, {}), **table}
            atomic_write_text(cache_file, json.dumps(cache, indent=1, sort_keys=True))
        return {cfg: table[cfg.to_json()] for cfg in candidates}

    # --- speculative decoding: draft choice ---------------------------------------------------------
    def draft_agreement(self, draft: SubnetConfig, ids: Sequence[int] | np.ndarray,
                        target: SubnetConfig | None = None, threads: int = 1, vocab: int | None = None) -> float:
        """Fraction of the positions of `ids` at which `draft`'s greedy next token (scoring `vocab`
        tokens, default all) is `target`'s (teacher forced, one prefill each): the acceptance rate of
        greedy speculative decoding."""
        want = self.logits(ids, target, threads=threads).argmax(-1)
        got = self.logits(ids, draft, threads=threads, vocab=vocab).argmax(-1)
        return float((want == got).mean())

    def choose_draft(self, candidates: Iterable[SubnetConfig | tuple[SubnetConfig, int | None]],
                     calibration_ids: Sequence[int] | np.ndarray, target: SubnetConfig | None = None,
                     threads: int = 1, k_max: int = 8, min_speedup: float = 1.05,
                     use_cache: bool = True) -> tuple[DraftChoice | None, list[DraftChoice]]:
        """The draft that speeds `target` up most on this CPU, or None when none is expected to beat
        plain decoding by `min_speedup`; and every candidate's measurement (best first). A candidate
        is a sub-network, or (sub-network, vocab) for a draft with an elastic head.

        Acceptance = greedy agreement on `calibration_ids` (cached per file, target and text in
        ``cache_dir()/draft_acceptance.json``). Costs are measured in a short speculative generation
        per candidate (draft time per token and verification time, shared KV cache and elastic head
        included), relative to the target's plain decode step (``profile``); cached per CPU."""
        target = target if target is not None else SubnetConfig.full(self.arch)
        pairs = [c if isinstance(c, tuple) else (c, None) for c in candidates]
        # the target itself drafts only with a smaller head
        full_vocab = self.arch.vocab_size
        pairs = [p for p in dict.fromkeys(pairs) if p[0] != target or (p[1] or full_vocab) < full_vocab]
        if not pairs:
            raise ValueError("no draft candidate: give sub-networks smaller than the target")
        ids = _token_array(calibration_ids)
        if len(ids) < 16:
            raise ValueError(f"calibration text too short to measure acceptance: {len(ids)} tokens (need >= 16)")
        plain_ms = self.profile([target], seq=32, threads=threads, runs=16, use_cache=use_cache)[target]
        cache_file = cache_dir() / "draft_acceptance.json"
        cache = _read_json(cache_file) if use_cache else {}
        digest = hashlib.sha1(ids.astype(np.int64).tobytes()).hexdigest()[:16]
        key = f"crc={self.checksum:08x}|target={target.to_json()}|text={digest}"
        table: dict[str, float] = dict(cache.get(key, {}))
        rows = []
        for cfg, vocab in pairs:
            name = f"{cfg.to_json()}|vocab={vocab or 0}"
            if name not in table:
                table[name] = self.draft_agreement(cfg, ids, target, threads, vocab)
            draft_ms, verify_ms = self._speculation_costs(target, cfg, vocab, ids, threads, use_cache)
            speedup, k = expected_speedup(table[name], draft_ms / plain_ms, verify_ms / plain_ms, k_max)
            rows.append(DraftChoice(cfg, table[name], draft_ms / plain_ms, k, speedup, vocab))
        if use_cache:
            cache = _read_json(cache_file)
            cache[key] = {**cache.get(key, {}), **table}
            atomic_write_text(cache_file, json.dumps(cache, indent=1, sort_keys=True))
        rows.sort(key=lambda r: -r.speedup)
        return (rows[0] if rows[0].speedup >= min_speedup else None), rows

    def _speculation_costs(self, target: SubnetConfig, draft: SubnetConfig, vocab: int | None,
                           ids: np.ndarray, threads: int, use_cache: bool) -> tuple[float, float]:
        """(draft ms per token, ms per verification of 5 positions) from a short speculative
        generation with k = 4; cached per CPU in ``engine_profiles.json``."""
        cache_file = cache_dir() / "engine_profiles.json"
        key = f"{cpu_model()}|crc={self.checksum:08x}|speculation|threads={threads}"
        name = f"{target.to_json()}|{draft.to_json()}|vocab={vocab or 0}"
        cached = (_read_json(cache_file) if use_cache else {}).get(key, {}).get(name)
        if cached is not None:
            return float(cached[0]), float(cached[1])
        stream = self.stream(ids[:32], subnet=target, max_new_tokens=29, stop_tokens=[], threads=threads, draft=draft,
                             draft_k=4, adaptive=False, draft_vocab=vocab)
        list(stream)
        stats = stream.speculation
        costs = (stats["draft_seconds"] * 1e3 / stats["drafted"], stats["verify_seconds"] * 1e3 / stats["rounds"])
        if use_cache:
            cache = _read_json(cache_file)
            cache.setdefault(key, {})[name] = list(costs)
            atomic_write_text(cache_file, json.dumps(cache, indent=1, sort_keys=True))
        return costs

    def pick(self, budget_ms: float, accuracy_table: Mapping[SubnetConfig, float],
             latency_table: Mapping[SubnetConfig, float] | None = None, **profile_kwargs: Any) -> SubnetConfig:
        """The most accurate sub-network whose measured latency fits `budget_ms` (ties: the faster).

        Latencies come from `latency_table`, else from ``profile`` (cached) over the table's configs.
        Raises ValueError when none fits, naming the fastest candidate.
        """
        if not accuracy_table:
            raise ValueError("accuracy_table is empty: give {SubnetConfig: accuracy} for the candidates")
        if budget_ms <= 0:
            raise ValueError(f"budget_ms must be positive, got {budget_ms}")
        latency = dict(latency_table) if latency_table is not None else self.profile(accuracy_table, **profile_kwargs)
        missing = [c.name for c in accuracy_table if c not in latency]
        if missing:
            raise ValueError(f"no latency measured for {', '.join(missing)}; profile them first")
        candidates = list(accuracy_table)
        # The selection rule is the native one (mlfs/budget.h), so the app and the runner pick alike.
        best = _core.pick_under_budget([float(accuracy_table[c]) for c in candidates],
                                       [float(latency[c]) for c in candidates], float(budget_ms))
        if best < 0:
            fastest = min(candidates, key=lambda c: latency[c])
            raise ValueError(f"no sub-network runs within {budget_ms:g} ms on this CPU; the fastest candidate, "
                             f"{fastest.name}, takes {latency[fastest]:.2f} ms")
        return candidates[best]


@dataclass(frozen=True)
class DraftChoice:
    """One candidate draft for a target, as measured on this CPU: its greedy agreement with the
    target on calibration text (= greedy speculation's acceptance rate), its decode cost relative to
    the target's, and the best expected speed-up over plain decoding with the k that gives it."""

    draft: SubnetConfig
    acceptance: float
    cost: float  # draft ms per token / target ms per token
    k: int
    speedup: float
    vocab: int | None = None  # tokens the draft scores (None: the whole vocabulary)

    @property
    def name(self) -> str:
        return self.draft.name + (f"+V{self.vocab}" if self.vocab else "")


def expected_speedup(acceptance: float, cost: float, verify_cost: float, k_max: int = 8) -> tuple[float, int]:
    """(speed-up over plain decoding, k) for the best k <= k_max: a round drafts k tokens (k * cost)
    and verifies them in one forward (verify_cost, in target decode steps) and emits on average
    1 + a + ... + a^k tokens (acceptance a per token, independent). The same model as the engine's
    adaptive k (csrc/engine/speculative.cpp)."""
    a = min(max(acceptance, 0.0), 0.999)
    best, best_k, gain, power = 0.0, 0, 1.0, 1.0
    for k in range(1, k_max + 1):
        power *= a
        gain += power
        speed = gain / (k * cost + verify_cost)
        if speed > best:
            best, best_k = speed, k
    return best, best_k


class TokenStream:
    """Iterator over the tokens of one generation (``Engine.stream``); after (or during) iteration
    it tells the prefill / decode throughput and can roll back (speculative decoding)."""

    def __init__(self, core: Any) -> None:
        self._core = core

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        token = self._core.next()
        if token < 0:
            raise StopIteration
        return int(token)

    @property
    def tokens(self) -> list[int]:
        """The prompt followed by every token generated so far."""
        return list(self._core.tokens)

    @property
    def speculation(self) -> dict[str, Any] | None:
        """With a draft: rounds, drafted / accepted tokens, plain steps, draft / verify seconds,
        whether the draft shares the target's KV cache, and ``acceptance_rate`` (accepted / drafted)
        and ``tokens_per_round`` (tokens emitted per verification); None without a draft."""
        stats = self._core.speculation
        if stats is None:
            return None
        stats = dict(stats)
        stats["acceptance_rate"] = stats["accepted"] / stats["drafted"] if stats["drafted"] else 0.0
        rounds = stats["rounds"]
        stats["tokens_per_round"] = (stats["accepted"] + rounds) / rounds if rounds else 0.0
        return stats

    @property
    def prompt_tokens(self) -> int:
        return self._core.prompt_tokens

    @property
    def generated(self) -> int:
        return self._core.generated

    @property
    def prefill_tok_s(self) -> float:
        s = self._core.prefill_seconds
        return self.prompt_tokens / s if s > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        """Tokens per second after the first (whose time counts as the prefill's)."""
        s = self._core.decode_seconds
        return (self.generated - 1) / s if s > 0 else 0.0

    @property
    def cache_bytes(self) -> int:
        return self._core.cache_bytes

    def rollback(self, position: int) -> None:
        """Forget the tokens at positions >= `position`; iteration continues from there."""
        self._core.rollback(position)


def _check_threads(threads: object) -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")


def _token_array(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Token ids as a C-contiguous 1-D int64 array (int32 arrays pass as they are)."""
    if isinstance(ids, np.ndarray):
        if ids.dtype not in (np.int64, np.int32):
            raise TypeError(f"token ids must be int64 or int32, got {ids.dtype}")
        if ids.ndim != 1:
            raise ValueError(f"token ids must be 1-D, got shape {ids.shape}")
        return np.ascontiguousarray(ids)
    try:
        arr = np.asarray(list(ids), dtype=np.int64)
    except (OverflowError, TypeError, ValueError) as e:
        raise ValueError(f"token ids must be integers: {e}") from None
    if arr.ndim != 1:
        raise ValueError(f"token ids must be a flat list, got shape {arr.shape}")
    return arr


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _parse_metadata(raw: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise PackedFileError(f"corrupt metadata: not UTF-8 JSON ({e})") from None
    if not isinstance(meta, dict):
        raise PackedFileError("corrupt metadata: not a JSON object")
    return meta


def _arch_from(meta: dict[str, Any], dims: dict[str, Any]) -> ArchSpec:
    """The ArchSpec recorded in the metadata, checked against the header the engine computes with."""
    try:
        arch = ArchSpec(**meta["arch"])
    except (KeyError, TypeError) as e:
        raise PackedFileError(f"corrupt metadata: no valid 'arch' record ({e})") from None
    header = (dims["num_layers"], dims["hidden"], dims["num_heads"], dims["head_dim"], dims["intermediate"],
              dims["vocab_size"], dims.get("num_kv_heads", dims["num_heads"]))
    recorded = (arch.num_layers, arch.hidden, arch.num_heads, arch.head_dim, arch.intermediate, arch.vocab_size,
                arch.num_kv_heads)
    if header != recorded:
        raise PackedFileError(f"corrupt metadata: arch {recorded} disagrees with the header {header}")
    return arch
