"""Self-speculative decoding benchmark: the engine's decode tokens/s with a draft from the same packed
file beside plain engine decoding and llama.cpp plain decoding, on the same prompts.

``run_bench_speculative(...)`` generates ``new_tokens`` tokens (no stop token) from every prompt of two
tasks — news continuation (consecutive windows of the held-out news text, raw) and TREC questions (the
instruct model's chat template around each question) — for every (dtype, threads, sampling): plain
engine decoding, then each draft, then llama.cpp's plain decoding of the same prompt ids with the
matching GGUF (int8 ↔ Q8_0, q4 ↔ Q4_0; skipped with its reason when llama-cpp-python is missing).
Backends alternate prompt by prompt, so background load hits them alike. Rows::

    {"task", "dtype", "threads", "target", "draft", "k", "sampling", "tok_s", "plain_tok_s",
     "llama_cpp_tok_s", "speedup", "acceptance", "mean_accepted", "identical"}

tok_s = all prompts' new tokens after the first / their decode time; speedup = tok_s / plain_tok_s;
acceptance = accepted / drafted tokens; mean_accepted = tokens emitted per verification; identical
(greedy only): every output equalled plain decoding's, token for token (None when sampling: the
outputs then follow the same distribution, not the same random stream).
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlfs_edge.config import SubnetConfig

ROW_KEYS = ("task", "dtype", "threads", "target", "draft", "k", "sampling", "tok_s", "plain_tok_s",
            "llama_cpp_tok_s", "speedup", "acceptance", "mean_accepted", "identical", "draft_cost", "verify_cost")
LLAMA_DTYPE = {"int8": "q8_0", "q4": "q4_0", "fp16": "f16"}  # the engine format's llama.cpp counterpart
SAMPLING = {"greedy": {}, "t=0.7": {"temperature": 0.7, "top_k": 40, "seed": 1}}


@dataclass(frozen=True)
class Draft:
    subnet: SubnetConfig
    vocab: int | None = None  # tokens the draft's head scores (None: all)

    @property
    def name(self) -> str:
        return self.subnet.name + (f"+V{self.vocab}" if self.vocab else "")


def task_prompts(tokenizer: Any, prompts: int, prompt_tokens: int) -> dict[str, list[list[int]]]:
    """News: consecutive `prompt_tokens` windows of the held-out news text. TREC: test questions in the
    tokenizer's chat template (a user turn, the assistant's turn opened)."""
    from mlfs_edge.data import load_classification, load_text
    from mlfs_edge.lm import token_stream

    news = token_stream(tokenizer, load_text("news").test, max_tokens=prompts * prompt_tokens)
    trec = []
    for question in load_classification("trec").test.texts[:prompts]:
        if getattr(tokenizer, "chat_template", None):
            ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                                tokenize=True, return_dict=False)
        else:
            ids = tokenizer(question)["input_ids"]
        trec.append(list(ids))
    return {"news": [news[i * prompt_tokens:(i + 1) * prompt_tokens] for i in range(prompts)], "trec": trec}


def run_bench_speculative(packed: dict[str, Path], prompts: dict[str, list[list[int]]], drafts: Sequence[Draft],
                          threads: Sequence[int] = (1, 2), new_tokens: int = 64, draft_k: int = 4,
                          llama_source: Any = None, work_dir: Path = Path("runs/bench_speculative"),
                          json_path: Path | None = None, command: str = "", progress: bool = True) -> dict[str, Any]:
    """See the module notes. `packed`: {engine dtype: .mlfs file}; `llama_source`: a DecoderSource for
    llama.cpp's rows (None: no llama.cpp column)."""
    from tqdm.auto import tqdm

    from mlfs_edge.report import markdown_table
    from mlfs_edge.runtime import Engine, cpu_model
    from mlfs_edge.runtime.format import atomic_write_text

    if new_tokens < 2:
        raise ValueError(f"new_tokens must be at least 2 (decode speed needs tokens after the first), got {new_tokens}")
    if not drafts:
        raise ValueError("give at least one draft sub-network")
    llama, why_not = None, None
    if llama_source is not None:
        from mlfs_edge.eval.backends import decoder_adapter

        llama = decoder_adapter("llama.cpp")
        why_not = llama.decoder_unavailable_reason()
        if why_not is not None:
            print(f"llama.cpp column skipped: {why_not}")
            llama = None
    rows = []
    cells = [(dt, th, task, mode) for dt in packed for th in threads for task in prompts for mode in SAMPLING]
    bar = tqdm(total=len(cells), desc="bench speculative", unit="cell", disable=not progress)
    for dtype, nthreads, task, mode in cells:
        engine = Engine.load(packed[dtype])
        target = SubnetConfig.full(engine.arch)
        sampling = SAMPLING[mode]
        llama_gen = None
        if llama is not None and dtype in LLAMA_DTYPE:
            built = llama.build_decoder(llama_source, [LLAMA_DTYPE[dtype]], work_dir)
            llama_gen = llama.load_decoder(built[LLAMA_DTYPE[dtype]], LLAMA_DTYPE[dtype], nthreads)
        plain_t, llama_t, spec = _Totals(), _Totals(), {d: _Totals() for d in drafts}
        for ids in prompts[task]:
            if llama_gen is not None and mode == "greedy":  # llama.cpp's adapter decodes greedily
                timing = llama_gen.generate(ids, new_tokens, nthreads)
                llama_t.add(timing.tokens - 1, timing.decode_s)
            stream = engine.stream(ids, max_new_tokens=new_tokens, stop_tokens=[], threads=nthreads, **sampling)
            plain = list(stream)
            plain_t.add(stream.generated - 1, _decode_s(stream))
            for d in drafts:
                s = engine.stream(ids, max_new_tokens=new_tokens, stop_tokens=[], threads=nthreads, draft=d.subnet,
                                  draft_k=draft_k, draft_vocab=d.vocab, **sampling)
                out = list(s)
                st = s.speculation
                spec[d].add(s.generated - 1, _decode_s(s), st["accepted"], st["drafted"], st["rounds"],
                            same=out == plain, draft_s=st["draft_seconds"], verify_s=st["verify_seconds"])
        plain_tok_s, step = plain_t.tok_s, plain_t.step_s
        for d in drafts:
            t = spec[d]
            rows.append({
                "task": task, "dtype": dtype, "threads": nthreads, "target": target.name, "draft": d.name,
                "k": f"{draft_k} (adaptive, max 8)", "sampling": mode, "tok_s": round(t.tok_s, 2),
                "plain_tok_s": round(plain_tok_s, 2),
                "llama_cpp_tok_s": round(llama_t.tok_s, 2) if llama_t.tokens else None,
                "speedup": round(t.tok_s / plain_tok_s, 3) if plain_tok_s else None,
                "acceptance": round(t.accepted / t.drafted, 4) if t.drafted else 0.0,
                "mean_accepted": round((t.accepted + t.rounds) / t.rounds, 3) if t.rounds else 0.0,
                "identical": t.all_same if mode == "greedy" else None,
                # what a round costs, in plain decode steps of the target: why a draft pays or not
                "draft_cost": round(t.draft_s / t.drafted / step, 3) if t.drafted and step else None,
                "verify_cost": round(t.verify_s / t.rounds / step, 3) if t.rounds and step else None,
            })
        bar.update()
    bar.close()
    table = markdown_table([{
        "task": r["task"], "dtype": r["dtype"], "thr": r["threads"], "sampling": r["sampling"], "draft": r["draft"],
        "tok/s": f"{r['tok_s']:.1f}", "plain": f"{r['plain_tok_s']:.1f}",
        "llama.cpp": "—" if r["llama_cpp_tok_s"] is None else f"{r['llama_cpp_tok_s']:.1f}",
        "speed-up": f"{r['speedup']:.2f}x", "accept.": f"{100 * r['acceptance']:.0f}%",
        "tok/verify": f"{r['mean_accepted']:.2f}",
        "draft cost": "—" if r["draft_cost"] is None else f"{r['draft_cost']:.2f}",
        "verify cost": "—" if r["verify_cost"] is None else f"{r['verify_cost']:.2f}",
        "same": {True: "yes", False: "NO", None: "—"}[r["identical"]]} for r in rows])
    print(table)
    result = {"command": command, "cpu": cpu_model(), "machine": platform.machine(), "new_tokens": new_tokens,
              "prompts_per_task": {t: len(p) for t, p in prompts.items()}, "llama_cpp": why_not or "measured",
              "rows": rows}
    if json_path is not None:
        atomic_write_text(Path(json_path), json.dumps(result, indent=1))
    return result


def _decode_s(stream: Any) -> float:
    """Seconds of a finished stream's decode phase (the tokens after the first)."""
    rate = stream.decode_tok_s
    return (stream.generated - 1) / rate if rate > 0 else 0.0


class _Totals:
    def __init__(self) -> None:
        self.tokens, self.seconds = 0, 0.0
        self.accepted = self.drafted = self.rounds = 0
        self.draft_s = self.verify_s = 0.0
        self.all_same = True

    def add(self, tokens: int, seconds: float, accepted: int = 0, drafted: int = 0, rounds: int = 0,
            same: bool = True, draft_s: float = 0.0, verify_s: float = 0.0) -> None:
        self.tokens += tokens
        self.seconds += seconds
        self.draft_s += draft_s
        self.verify_s += verify_s
        self.accepted += accepted
        self.drafted += drafted
        self.rounds += rounds
        self.all_same = self.all_same and same

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def step_s(self) -> float:
        """Seconds per decoded token."""
        return self.seconds / self.tokens if self.tokens else 0.0
