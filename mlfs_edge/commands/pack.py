"""mlfs-edge pack: write a model folder as one .mlfs packed supernet file for the C++ engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlfs_edge.models import SENTENCE_POOLINGS

ORDER = 60


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pack", help="pack a model folder into one .mlfs file for the native engine",
                       description="Write a Hugging Face encoder folder (BERT, RoBERTa, XLM-RoBERTa, DistilBERT, "
                                   "MPNet, ModernBERT: the base model or its sequence classifier, already "
                                   "importance-reordered) "
                                   "or a causal LM folder (Llama, SmolLM2, Qwen2, Qwen3, Mistral, Gemma, Gemma 2, "
                                   "Phi-3, GPT-2; e.g. the decoder supernet `mlfs-edge train` writes) as one .mlfs "
                                   "file: the whole supernet, so the engine can run any sub-network of it. "
                                   "The tokenizer is saved next to the file (OUT.tokenizer/) when the folder "
                                   "has one.",
                       epilog="Examples: mlfs-edge pack runs/demo --dtype int8  (a run folder: writes "
                              "runs/demo/supernet-int8.mlfs)  |  "
                              "mlfs-edge pack runs/demo/teacher teacher-int8.mlfs --dtype int8")
    p.add_argument("model_dir", help="a training run folder (its supernet is packed), a Hugging Face model "
                                     "folder (config.json + weights) or a bundled model: minilm, smollm2")
    p.add_argument("out", nargs="?", default=None,
                   help="output .mlfs file, written atomically (default for a run: RUN/supernet-DTYPE.mlfs, where "
                        "`mlfs-edge run RUN` finds it)")
    p.add_argument("--dtype", choices=["fp32", "fp16", "int8", "q4"], default="fp32",
                   help="storage of the Linear weights and word embedding; int8 uses per-output-row "
                        "symmetric scales, q4 (decoders) 4-bit groups of 32 inputs with one scale each "
                        "(default: %(default)s)")
    p.add_argument("--head-dtype", choices=["fp32", "fp16", "int8", "q4"], default=None,
                   help="decoders: storage of the LM head / embedding table when it should differ from --dtype "
                        "(e.g. fp16 in an int8 or q4 file; default: --dtype)")
    p.add_argument("--vocab-order", default=None, metavar="TEXT",
                   help="decoders: store the vocabulary most frequent first, counted on TEXT's training split (a "
                        "bundled corpus: news, hamlet; or a .txt/.jsonl file), so a speculative draft can score "
                        "only the first N tokens (`generate --draft-vocab N`); token ids are unchanged")
    p.add_argument("--pooling", choices=["cls", *SENTENCE_POOLINGS], default=None,
                   help="output of a plain encoder: cls = the pooler (dense + tanh) on the first token; the others "
                        "are sentence-transformers' modes on the raw token states (cls_token = the first token). "
                        "Default: the folder's sentence-transformers config (modules.json, 1_Pooling/config.json), "
                        "else mean; a classifier always uses cls")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="L2-normalise a plain encoder's embedding in the engine (default: when the folder's "
                        "sentence-transformers pipeline ends with a Normalize module)")
    p.add_argument("--lora-rank", type=int, default=None, metavar="R",
                   help="for a supernet trained with [lora] elastic_ranks: keep its last LoRA adapters unmerged "
                        "at rank R (the engine then runs base + s·B·A through its low-rank path, fp32 adapters "
                        "beside fp32/fp16/int8 base weights); default: the merged weights")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlfs_edge.assets import resolve_model_path
    from mlfs_edge.commands._common import model_folder
    from mlfs_edge.runtime import Engine, pack
    from mlfs_edge.supernet.folder import unmerged_supernet
    from mlfs_edge.train.run_folder import find_run_folder

    # a bundled model's name ("minilm", "smollm2") means its folder, unless a path of that name exists
    given = Path(args.model_dir)
    model_dir = model_folder(given) if given.exists() or args.model_dir not in ("minilm", "smollm2") \
        else resolve_model_path(args.model_dir)
    run_dir = find_run_folder(model_dir)
    out = args.out
    if out is None:
        if run_dir is None:
            raise ValueError(f"give the output file: mlfs-edge pack {args.model_dir} OUT.mlfs")
        rank = f"-rank{args.lora_rank}" if args.lora_rank is not None else ""
        out = run_dir / f"{model_dir.name}-{args.dtype}{rank}.mlfs"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a model folder (no config.json); give a folder written by "
                                "save_pretrained, e.g. runs/demo/teacher")
    has_tokenizer = any((model_dir / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json"))
    model, lora = (model_dir, None) if args.lora_rank is None else unmerged_supernet(model_dir, args.lora_rank)
    order = _frequency_order(model_dir, args.vocab_order) if args.vocab_order else None
    path = pack(model, out, dtype=args.dtype, pooling=args.pooling, normalize=args.normalize, lora=lora,
                head_dtype=args.head_dtype,
                tokenizer=model_dir if has_tokenizer else None, source=str(model_dir), vocab_order=order,
                vocab_order_source=f"token frequency on {args.vocab_order} (train split)" if order else None)
    engine = Engine.load(path)
    if engine.kind == "decoder":
        a = engine.arch
        kind = f"decoder, {a.num_heads} heads / {a.num_kv_heads} key-value groups"
    else:
        norm = ", normalised" if engine.normalize else ""
        kind = f"classifier ({', '.join(engine.labels)})" if engine.labels else f"{engine.pooling}-pooled{norm} encoder"
    print(f"wrote {path} ({engine.file_size / 2**20:.1f} MiB, {engine.dtype}, {engine.arch.num_layers} layers, "
          f"{kind}, CRC-32 {engine.checksum:08x})")
    if engine.tokenizer_dir():
        print(f"tokenizer saved to {engine.tokenizer_dir()}")
    target = args.model_dir if run_dir is not None and args.out is None else path
    if engine.kind == "decoder":
        draft = " --draft auto" + (" --draft-vocab 8192" if order else "")
        print(f"Next: mlfs-edge generate {path} --prompt 'Once upon a time' [--subnet depth=24] [{draft.strip()}]")
    elif engine.labels:
        print(f"Next: mlfs-edge run {target} --text 'some text' [--subnet depth=3,heads=6,mlp=768 | --budget-ms 5]")
    else:
        print(f"Next: mlfs-edge run {target} --embed --text 'some text' [--input FILE --output vectors.npy] "
              "[--subnet depth=3,heads=6,mlp=768]")
    return 0



def _frequency_order(model_dir, text: str) -> list[int]:  # noqa: ANN001
    """Token ids by frequency on the training split of `text`, tokenized with the model's tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    from mlfs_edge.data import load_lm_text
    from mlfs_edge.lm import token_stream
    from mlfs_edge.runtime import frequency_order

    if not any((model_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise ValueError(f"--vocab-order counts tokens with the model's tokenizer, and {model_dir} has none")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = token_stream(tokenizer, load_lm_text(text).train)
    return frequency_order(ids, AutoConfig.from_pretrained(model_dir).vocab_size)
