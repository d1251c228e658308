"""mlfs-edge bench: benchmarks that compare the project's runtimes with the usual ones, side by side."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

ORDER = 80


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: the engine beside PyTorch, ONNX Runtime, ExecuTorch, llama.cpp",
                       description="Run a benchmark and print a table (optionally JSON). All backends run in one "
                                   "process, timed round-robin, so their ratios are comparable even on a busy "
                                   "machine.")
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    e = what.add_parser("engine", help="MiniLM-L6 batch 1: mlfs fp32/fp16/int8 vs pytorch, onnxruntime, executorch",
                        description="Pack the bundled all-MiniLM-L6-v2 (real weights) as fp32/fp16/int8 and time "
                                    "the native engine beside PyTorch eager (fp32, fp16, its dynamic int8), ONNX "
                                    "Runtime (fp32, its dynamic int8) and ExecuTorch XNNPACK (fp32, fp16, int8), "
                                    "for the full network and a ~50%% sub-network (half the heads and MLP "
                                    "channels), all returning the sentence embedding. The runtimes are built and "
                                    "loaded by the same adapters as `mlfs-edge compare`. Also measures the "
                                    "sub-network switch time, 2 vs 1 threads and the int8 engine's peak RSS. "
                                    "Takes ~10 min on 2 cores (six ExecuTorch exports).",
                        epilog="Example: mlfs-edge bench engine --seq 128 --threads 1 --json out.json --runs 30")
    e.add_argument("--seq", type=int, default=128, help="tokens per input (default: %(default)s)")
    e.add_argument("--threads", type=int, default=1, help="threads for every backend (default: %(default)s)")
    e.add_argument("--runs", type=int, default=30, help="timed runs per backend after warm-up (default: %(default)s)")
    e.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    e.add_argument("--model", default=None, help="model folder (default: the bundled all-MiniLM-L6-v2)")
    e.set_defaults(func=run)

    g = what.add_parser(
        "generate", help="decoder tokens/s: mlfs fp32/fp16/int8/q4 x sub-networks vs llama.cpp, pytorch",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Greedy generation on the bundled SmolLM2-135M-Instruct (real weights), prompted with the first "
                    "--prompt-tokens tokens of the held-out news text, exactly --new-tokens new tokens (no stop "
                    "token), at each thread count:\n"
                    "  mlfs       the engine, fp32/fp16/int8/q4, the full model and two sub-networks (~50% and "
                    "~25% of\n"
                    "             the layer parameters; --subnet to choose) from one packed file per dtype\n"
                    "  llama.cpp  llama-cpp-python, the same weights as GGUF f16/q8_0/q4_0 (requantized by "
                    "llama.cpp's\n"
                    "             own quantizer), full model; `make bench-setup` installs it (10-20 min)\n"
                    "  pytorch    Hugging Face generate, fp32, with its KV cache\n"
                    "Each (backend, dtype) runs in a worker process of its own, driven round-robin for --rounds "
                    "rounds;\nrows are medians. Also: the sub-network switch time, the engine's peak RSS after "
                    "short and long\ngenerations (KV memory) and decode's weight bandwidth beside this machine's. "
                    "~15-25 min on 2 cores.",
        epilog="Examples:\n"
               "  mlfs-edge bench generate --prompt-tokens 128 --new-tokens 128 --threads 1,2 --json out.json\n"
               "  mlfs-edge bench generate --supernet runs/mlfs_smollm2_news --backends mlfs --dtypes int8,q4\n"
               "  mlfs-edge bench generate --subnet depth=30,heads=6,mlp=768 --rounds 5")
    g.add_argument("--prompt-tokens", type=int, default=128, help="prompt length in tokens (default: %(default)s)")
    g.add_argument("--new-tokens", type=int, default=128, help="greedy tokens to generate (default: %(default)s)")
    g.add_argument("--threads", default="1,2", help="thread counts, comma-separated (default: %(default)s)")
    g.add_argument("--rounds", type=int, default=3, help="timed generations per row, round-robin "
                   "(default: %(default)s)")
    g.add_argument("--backends", default="mlfs,llama.cpp,pytorch", help="backends to measure (default: %(default)s)")
    g.add_argument("--dtypes", default=None,
                   help="keep only these dtypes, e.g. int8,q4,q8_0,q4_0 (default: every backend's all)")
    g.add_argument("--subnet", action="append", default=None, metavar="SPEC",
                   help="an engine sub-network, e.g. depth=30,heads=6,mlp=768 (repeat; default: ~50%% and ~25%% "
                        "of the layer parameters from the model's search space)")
    g.add_argument("--supernet", default=None, metavar="RUN_DIR",
                   help="a trained causal-LM run (or its supernet/ folder) instead of the bundled SmolLM2; "
                        "llama.cpp still runs the bundled GGUF (same shapes)")
    g.add_argument("--model", default=None, metavar="FOLDER", help="another Llama-family Hugging Face folder")
    g.add_argument("--kv-tokens", default="32,1024",
                   help="new tokens of the short and the long KV-memory generation (default: %(default)s)")
    g.add_argument("--work-dir", default="runs/bench_generate",
                   help="packed files are kept here and reused (default: %(default)s)")
    g.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON (and the plot beside it)")
    g.add_argument("--plot", default=None, metavar="PATH", help="the plot's path (default: the JSON's, .png)")
    g.add_argument("--note", default="", help="a note stored in the JSON (e.g. the machine was shared)")
    g.add_argument("--draft", action="append", default=None, metavar="SPEC|auto",
                   help="self-speculative decoding rows instead (issue: speculative.json): the engine with this "
                        "draft (repeat; 'depth=10' = the first 10 layers, 'auto' = the draft `generate --draft "
                        "auto` picks) beside its plain decoding and llama.cpp's, on news continuation and TREC "
                        "question prompts, greedy and temperature 0.7, int8 and q4 (--dtypes) from a "
                        "frequency-ordered packed file")
    g.add_argument("--draft-vocab", type=int, default=None, metavar="N",
                   help="with --draft SPEC: the draft scores only the N most frequent tokens")
    g.add_argument("--prompts", type=int, default=3, help="with --draft: prompts per task (default: %(default)s)")
    g.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from mlfs_edge.eval.bench_generate import ALL_DTYPES, GenerateSettings, parse_ints, run_bench_generate

    if args.draft:
        return run_speculative(args)

    kv = parse_ints(args.kv_tokens, "--kv-tokens")
    settings = GenerateSettings(
        prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, threads=parse_ints(args.threads, "--threads"),
        rounds=args.rounds, backends=tuple(b.strip() for b in args.backends.split(",") if b.strip()),
        dtypes=tuple(d.strip() for d in args.dtypes.split(",") if d.strip()) if args.dtypes else ALL_DTYPES,
        subnets=tuple(args.subnet or ()), kv_tokens=kv,  # type: ignore[arg-type]  (validate() checks it is two counts)
        work_dir=Path(args.work_dir)).validate()
    run_bench_generate(settings, model=args.model, supernet=args.supernet,
                       json_path=Path(args.json) if args.json else None,
                       plot_path=Path(args.plot) if args.plot else None,
                       command=shlex.join(["mlfs-edge", *getattr(args, "argv", ["bench", "generate"])]),
                       note=args.note)
    return 0


def run(args: argparse.Namespace) -> int:
    from mlfs_edge.assets import minilm_path
    from mlfs_edge.eval.bench_engine import run_benchmark

    if args.seq < 1 or args.threads < 1:
        raise ValueError("--seq and --threads must be positive")
    model = Path(args.model) if args.model else minilm_path()
    run_benchmark(model, seq=args.seq, threads=args.threads, runs=args.runs,
                  json_path=Path(args.json) if args.json else None,
                  command=shlex.join(["mlfs-edge", *getattr(args, "argv", ["bench", "engine"])]))
    return 0


def run_speculative(args: argparse.Namespace) -> int:
    """`bench generate --draft ...`: the speculative-decoding rows (mlfs_edge/eval/bench_speculative.py)."""
    from transformers import AutoTokenizer

    from mlfs_edge.assets import smollm2_path
    from mlfs_edge.config import SubnetConfig
    from mlfs_edge.data import load_text
    from mlfs_edge.eval.backends import DecoderSource
    from mlfs_edge.eval.bench_generate import parse_ints
    from mlfs_edge.eval.bench_speculative import Draft, run_bench_speculative, task_prompts
    from mlfs_edge.lm import token_stream
    from mlfs_edge.runtime import Engine, frequency_order, pack
    from mlfs_edge.runtime.format import is_current

    folder = Path(args.model) if args.model else smollm2_path()
    if args.supernet:
        from mlfs_edge.commands._common import model_folder

        folder = model_folder(args.supernet)
    dtypes = [d.strip() for d in (args.dtypes or "int8,q4").split(",") if d.strip()]
    bad = [d for d in dtypes if d not in ("fp32", "fp16", "int8", "q4")]
    if bad:
        raise ValueError(f"--draft rows run the engine: --dtypes must be among fp32,fp16,int8,q4, got {','.join(bad)}")
    if args.prompts < 1:
        raise ValueError(f"--prompts must be at least 1, got {args.prompts}")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    order = frequency_order(token_stream(tokenizer, load_text("news").train), len(tokenizer))
    packed = {}
    for dtype in dtypes:  # the vocabulary most frequent first: drafts may score a prefix of it
        path = work / f"spec-{dtype}.mlfs"
        if not is_current(path):
            pack(folder, path, dtype=dtype, vocab_order=order, vocab_order_source="token frequency on news (train)")
        packed[dtype] = path
    engine = Engine.load(packed[dtypes[0]])
    target = SubnetConfig.full(engine.arch)
    prompts = task_prompts(tokenizer, args.prompts, args.prompt_tokens)
    drafts = []
    for spec in args.draft:
        if spec == "auto":
            from mlfs_edge.commands._common import draft_candidates

            cands = draft_candidates(engine, packed[dtypes[0]], target, args.draft_vocab)
            best, rows = engine.choose_draft(cands, token_stream(tokenizer, load_text("news").test, 256))
            print("draft auto: " + ("; ".join(f"{r.name} {r.speedup:.2f}x" for r in rows[:3])))
            if best is None:
                print("draft auto: no candidate is expected to beat plain decoding; measuring the best one anyway")
            top = best or rows[0]
            drafts.append(Draft(top.draft, top.vocab))
        else:
            drafts.append(Draft(SubnetConfig.parse_draft(spec, target, engine.arch), args.draft_vocab))
    # llama.cpp runs the bundled GGUF (a trained SmolLM2 supernet has its shapes); none for another --model
    llama = None if args.model else DecoderSource(smollm2_path(), smollm2_shapes=True)
    run_bench_speculative(packed, prompts, list(dict.fromkeys(drafts)), threads=parse_ints(args.threads, "--threads"),
                          new_tokens=args.new_tokens, llama_source=llama,
                          work_dir=work, json_path=Path(args.json) if args.json else None,
                          command=shlex.join(["mlfs-edge", *getattr(args, "argv", ["bench", "generate"])]))
    return 0
