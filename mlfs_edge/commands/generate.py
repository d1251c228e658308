"""mlfs-edge generate: continue a prompt with a sub-network of a packed decoder on the native engine."""

from __future__ import annotations

import argparse
import sys

ORDER = 72


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text with a packed decoder (.mlfs) on the native engine",
                       description="Tokenize PROMPT with the tokenizer saved next to the packed decoder (its chat "
                                   "template when it has one, unless --raw), generate with the chosen sub-network "
                                   "in C++, stream the text to the terminal and end with the prefill and decode "
                                   "tokens/s.",
                       epilog="Example: mlfs-edge generate smollm2-int8.mlfs --prompt 'The city council' "
                              "--subnet depth=24,heads=6,mlp=768 --max-new-tokens 64 --raw")
    p.add_argument("model", help="packed decoder .mlfs file (from `mlfs-edge pack` of a causal LM)")
    p.add_argument("--prompt", required=True, help="text to continue (or the user message with a chat template)")
    p.add_argument("--subnet", default="full",
                   help="'full', 'depth=24,heads=6,mlp=768' (d/h/f), inline JSON or a .json/.toml file "
                        "(default: full)")
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


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.runtime import Engine

    engine = Engine.load(args.model)
    if engine.kind != "decoder":
        raise ValueError(f"{args.model} is an encoder file: use `mlfs-edge run`; `generate` needs a packed causal LM")
    tok_dir = args.tokenizer or engine.tokenizer_dir()
    if tok_dir is None:
        raise FileNotFoundError(f"no tokenizer saved next to {args.model}; pass --tokenizer FOLDER")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    cfg = SubnetConfig.parse(args.subnet, engine.arch)
    ids = prompt_ids(tokenizer, args.prompt, args.raw)
    stream = engine.stream(ids, subnet=cfg, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                           top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                           seed=args.seed, threads=args.threads, cache_dtype=args.cache_dtype)
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
    return 0
