"""mlfs-edge generate: continue a prompt with a sub-network of a packed decoder on the native engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mlfs_edge.commands._common import draft_candidates, packed_file, quality_table, run_palette

if TYPE_CHECKING:
    from mlfs_edge.config import SubnetConfig

ORDER = 72
# The decode step is profiled after a short prompt, over enough tokens for a stable median.
PROFILE_PROMPT = 32
PROFILE_TOKENS = 16
# --draft auto measures acceptance on this many held-out news tokens (two prefills per candidate).
CALIBRATION_TOKENS = 256


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text with a packed decoder (.mlfs) on the native engine",
                       description="Tokenize PROMPT with the tokenizer saved next to the packed decoder (its chat "
                                   "template when it has one, unless --raw), generate with the chosen sub-network "
                                   "in C++, stream the text to the terminal and end with the prefill and decode "
                                   "tokens/s.",
                       epilog="Examples: mlfs-edge generate smollm2-int8.mlfs --prompt 'The city council' "
                              "--subnet depth=24,heads=6,mlp=768 --max-new-tokens 64 --raw;  "
                              "mlfs-edge generate runs/smollm2 --prompt 'Hello' --budget-ms-per-token 15")
    p.add_argument("model", help="packed decoder .mlfs file (from `mlfs-edge pack` of a causal LM), or a training "
                                 "run folder holding one")
    p.add_argument("--dtype", choices=["fp32", "fp16", "int8", "q4"], default=None,
                   help="with a run folder holding several packed files: which one (default: int8 when packed)")
    p.add_argument("--prompt", required=True, help="text to continue (or the user message with a chat template)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--subnet", default="full",
                       help="'full', 'depth=24,heads=6,mlp=768' (d/h/f), inline JSON or a .json/.toml file "
                            "(default: full)")
    which.add_argument("--budget-ms-per-token", type=float, default=None, metavar="MS",
                       help="pick the best sub-network whose decode step takes at most MS milliseconds per token on "
                            "this CPU (measured once per CPU and file, then cached)")
    p.add_argument("--quality", default=None, metavar="JSON",
                   help="with --budget-ms-per-token: a palette.json of `mlfs-edge eval` (lowest perplexity wins) or "
                        "a JSON list of {\"subnet\": ..., \"perplexity\"|\"accuracy\": x}; default: the run's "
                        "palette.json when the model belongs to an evaluated run, else the search space ranked by "
                        "size (bigger = better)")
    p.add_argument("--draft", default=None, metavar="CFG|auto",
                   help="speculative decoding: a smaller sub-network of the same file drafts tokens, the chosen one "
                        "verifies them (greedy output unchanged). 'depth=10' = its first 10 layers (they share its "
                        "KV cache; heads=/mlp= narrow them), JSON as given. 'auto' measures candidates here "
                        "(acceptance on held-out news text x decode cost on this CPU, cached) and uses the best one, "
                        "or none when "
                        "none is expected to be faster than plain decoding")
    p.add_argument("--draft-vocab", type=int, default=None, metavar="N",
                   help="the draft scores only the first N tokens of the file's vocabulary order (a multiple of 32; "
                        "pack with --vocab-order so they are the most frequent): a cheaper draft head, outputs "
                        "unchanged")
    p.add_argument("--draft-k", type=int, default=4,
                   help="draft tokens per round to start with; adapted to the measured acceptance (default: "
                        "%(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="HF-style penalty (1 = off)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default: %(default)s)")
    p.add_argument("--cache-dtype", choices=["fp32", "fp16"], default="fp32", help="KV cache storage")
    p.add_argument("--raw", action="store_true", help="tokenize the prompt as it is, without the chat template")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the one saved next to the model)")
    p.set_defaults(func=run)


def prompt_ids(tokenizer, prompt: str, raw: bool) -> list[int]:  # noqa: ANN001
    """The prompt's token ids: through the tokenizer's chat template (a user turn, then the
    assistant's turn opened) when it has one and not `raw`, else the text as it is."""
    if not raw and getattr(tokenizer, "chat_template", None):
        return list(tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                  tokenize=True, return_dict=False))
    return list(tokenizer(prompt)["input_ids"])


def pick_for_budget(engine, model_path: Path, args: argparse.Namespace) -> SubnetConfig:  # noqa: ANN001
    """The best sub-network (by the quality table) whose measured decode step fits the budget."""
    if args.budget_ms_per_token <= 0:
        raise ValueError(f"--budget-ms-per-token must be positive, got {args.budget_ms_per_token:g}")
    quality = args.quality or run_palette(model_path)
    arch = engine.arch
    # Without a palette the whole search space is the candidate list: every third depth keeps the first
    # profile to a few dozen generations (~30 s), later picks read the cache.
    step = max(1, (arch.num_layers - arch.num_layers // 2) // 5)
    depths = None if quality else range(arch.num_layers, arch.num_layers // 2 - 1, -step)
    table = quality_table(quality, arch, depths=sorted(depths) if depths else None)
    ranked = f"quality from {quality}" if quality else "no palette: bigger ranked as better"
    print(f"[generate] {model_path}; {ranked}")
    print(f"profiling {len(table)} candidate sub-networks' decode step on this CPU, {args.threads} thread(s) "
          "(cached per CPU model after the first time)")
    cfg = engine.pick(args.budget_ms_per_token, table, seq=PROFILE_PROMPT, threads=args.threads, runs=PROFILE_TOKENS)
    ms = engine.profile([cfg], seq=PROFILE_PROMPT, threads=args.threads, runs=PROFILE_TOKENS)[cfg]
    print(f"picked {cfg.name} ({cfg.param_fraction(arch):.0%} of the layer parameters, {ms:.1f} ms per token measured) "
          f"for a {args.budget_ms_per_token:g} ms per token budget")
    return cfg


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.runtime import Engine

    model_path = packed_file(args.model, args.dtype)
    engine = Engine.load(model_path)
    if engine.kind != "decoder":
        raise ValueError(f"{model_path} is an encoder file: use `mlfs-edge run`; `generate` needs a packed causal LM")
    tok_dir = args.tokenizer or engine.tokenizer_dir()
    if tok_dir is None:
        raise FileNotFoundError(f"no tokenizer saved next to {model_path}; pass --tokenizer FOLDER")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    ids = prompt_ids(tokenizer, args.prompt, args.raw)
    if args.budget_ms_per_token is not None:
        cfg = pick_for_budget(engine, model_path, args)
    else:
        cfg = SubnetConfig.parse(args.subnet, engine.arch)
    if cfg != SubnetConfig.full(engine.arch) and engine.metadata.get("importance_order") is None:
        print(f"note: {model_path} was packed from a plain model (no importance order, no MLFS training), so "
              f"{cfg.name} is an untrained slice and its text will be poor; for trained sub-networks: mlfs-edge train "
              "--config configs/mlfs_smollm2_news.toml, then mlfs-edge pack RUN_FOLDER")
    draft, draft_vocab = choose_draft(engine, model_path, cfg, args) if args.draft else (None, None)
    stream = engine.stream(ids, subnet=cfg, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                           top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                           seed=args.seed, threads=args.threads, cache_dtype=args.cache_dtype, draft=draft,
                           draft_k=args.draft_k, draft_k_max=max(8, args.draft_k), draft_vocab=draft_vocab)
    out: list[int] = []
    shown = ""
    for token in stream:
        out.append(token)
        # decode the whole continuation each time: a token may complete a multi-byte character
        text = tokenizer.decode(out, skip_special_tokens=True)
        if text.startswith(shown):
            sys.stdout.write(text[len(shown):])
            sys.stdout.flush()
            shown = text
    print()
    print(f"[{cfg.name}, {engine.dtype}, {args.threads} thread(s)] prompt {stream.prompt_tokens} tokens: prefill "
          f"{stream.prefill_tok_s:.1f} tok/s; {stream.generated} new tokens: decode {stream.decode_tok_s:.1f} tok/s")
    spec = stream.speculation
    if spec is not None:
        vocab = f" scoring {draft_vocab} tokens" if draft_vocab else ""
        print(f"[draft {draft.name}{vocab}] {spec['accepted']}/{spec['drafted']} drafted tokens accepted "
              f"({spec['acceptance_rate']:.0%}), {spec['tokens_per_round']:.2f} tokens per verification over "
              f"{spec['rounds']} rounds, {spec['plain_steps']} plain steps"
              f"{', KV cache shared with the target' if spec['shared_cache'] else ''}")
    return 0


def choose_draft(engine, model_path: Path, target: SubnetConfig, args: argparse.Namespace):  # noqa: ANN001, ANN201
    """--draft: (a parsed sub-network, --draft-vocab), or for 'auto' the measured best over the
    candidates and, in a frequency-ordered file, a few head sizes ((None, None) when none pays)."""
    from mlfs_edge.config import SubnetConfig

    if args.draft != "auto":
        return SubnetConfig.parse_draft(args.draft, target, engine.arch), args.draft_vocab
    from transformers import AutoTokenizer

    from mlfs_edge.data import load_text
    from mlfs_edge.lm import token_stream

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or engine.tokenizer_dir())
    calibration = token_stream(tokenizer, load_text("news").test, max_tokens=CALIBRATION_TOKENS)
    candidates = draft_candidates(engine, model_path, target, args.draft_vocab)
    print(f"[draft auto] measuring {len(candidates)} candidate drafts for {target.name}: greedy agreement on "
          f"{len(calibration)} held-out news tokens, draft and verification cost on this CPU (cached after the "
          "first time)")
    best, rows = engine.choose_draft(candidates, calibration, target=target, threads=args.threads)
    for r in rows[:3]:
        print(f"  {r.name}: acceptance {r.acceptance:.0%}, cost {r.cost:.2f} of the target -> expected "
              f"{r.speedup:.2f}x (k={r.k})")
    if best is None:
        print("[draft auto] no draft is expected to beat plain decoding here: decoding without one")
        return None, None
    print(f"[draft auto] drafting with {best.name}")
    return best.draft, best.vocab
