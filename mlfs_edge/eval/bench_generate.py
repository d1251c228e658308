"""Decoder benchmark: the engine's greedy generation beside llama.cpp and PyTorch ``generate``.

``run_bench_generate(...)`` measures prefill and decode tokens/s of

- the mlfs engine: fp32 / fp16 / int8 / q4, the full model and (by default) two sub-networks of about
  50 % and 25 % of the layer parameters, all run from one packed file per dtype;
- llama.cpp (``llama-cpp-python``, ``make bench-setup``): the same SmolLM2 weights as GGUF F16 / Q8_0
  / Q4_0, full model only (see ``backends/llama_cpp.py``);
- PyTorch fp32 ``generate`` with its KV cache;

on one prompt: the first ``prompt_tokens`` tokens of the held-out bundled news text, then exactly
``new_tokens`` greedy tokens (no stop token), at each thread count. Every (backend, dtype) lives in a
persistent worker process of its own (so a backend's imports, threads and peak RSS are its own),
loaded once; the parent drives them round-robin — one generation of each cell in turn, ``rounds``
rounds after a warm-up, the starting cell rotated each round — so load from other processes on a
shared machine hits every backend alike; a row holds the medians of its rounds. Rows::

    {"backend", "subnet", "dtype", "threads", "prompt_tokens", "new_tokens", "prefill_tok_s",
     "decode_tok_s", "peak_rss_mb", "file_bytes"}

prefill_tok_s = prompt tokens / (time from the call to the first new token); decode_tok_s = the other
new tokens / their time (wall clock around each runtime's own calls, one clock for all).
peak_rss_mb: the worker's peak resident set (VmHWM) over all its generations: interpreter, the
runtime's libraries, the weights it touched and its caches (for the engine: its largest sub-network).

Also measured, for the issue's targets: the time to switch sub-network between two generations and
the resident set around switches (no weight byte is copied: the RSS does not move); the engine's peak
RSS after a short and a long generation (its KV cache grows with the tokens held); and decode's
effective weight bandwidth (weight bytes read per token x tokens/s) beside this machine's measured
single-thread memory read bandwidth.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mlfs_edge.config import ArchSpec, SearchSpace, SubnetConfig
from mlfs_edge.eval.backends import DECODER_ADAPTERS, DECODER_BACKENDS, DecoderSource, decoder_adapter
from mlfs_edge.families import check_stage

ROW_KEYS = ("backend", "subnet", "dtype", "threads", "prompt_tokens", "new_tokens", "prefill_tok_s",
            "decode_tok_s", "peak_rss_mb", "file_bytes")
ALL_DTYPES = tuple(dict.fromkeys(d for m in DECODER_ADAPTERS.values() for d in m.DECODER_DTYPES))
SUBNET_TARGETS = (0.5, 0.25)  # default sub-networks: the closest to these shares of the layer parameters
WARMUP_PROMPT, WARMUP_NEW = 16, 4
REPLY_TIMEOUT_S = 1800  # one worker operation (a load, a generation) before the run is declared hung


@dataclass(frozen=True)
class GenerateSettings:
    prompt_tokens: int = 128
    new_tokens: int = 128
    threads: tuple[int, ...] = (1, 2)
    rounds: int = 3
    backends: tuple[str, ...] = DECODER_BACKENDS
    dtypes: tuple[str, ...] = ALL_DTYPES  # filters every backend's own list
    subnets: tuple[str, ...] = ()  # command-line specs; () = ~50 % and ~25 % of the layer parameters
    kv_tokens: tuple[int, int] = (32, 1024)  # generated tokens of the short and the long KV-memory run
    work_dir: Path = Path("runs/bench_generate")

    def validate(self) -> GenerateSettings:
        if self.prompt_tokens < 1:
            raise ValueError(f"--prompt-tokens must be at least 1, got {self.prompt_tokens}")
        if self.new_tokens < 2:
            raise ValueError(f"--new-tokens must be at least 2 (decode speed needs tokens after the first), "
                             f"got {self.new_tokens}")
        if not self.threads or any(t < 1 for t in self.threads):
            raise ValueError(f"--threads must be positive thread counts like 1,2, got {list(self.threads)}")
        if self.rounds < 1:
            raise ValueError(f"--rounds must be at least 1, got {self.rounds}")
        for b in self.backends:
            decoder_adapter(b)
        if not self.backends:
            raise ValueError(f"give at least one backend of {', '.join(DECODER_BACKENDS)}")
        for d in self.dtypes:
            if d not in ALL_DTYPES:
                raise ValueError(f"unknown dtype {d!r}; choose from {', '.join(ALL_DTYPES)} (engine: fp32 fp16 int8 "
                                 "q4; llama.cpp: f16 q8_0 q4_0; pytorch: fp32)")
        if len(self.kv_tokens) != 2 or not 1 <= self.kv_tokens[0] < self.kv_tokens[1]:
            raise ValueError(f"--kv-tokens must be two growing counts like 32,1024, got {list(self.kv_tokens)}")
        return self


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """'1,2' -> (1, 2); a one-line error for anything else."""
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers like 1,2, got {text!r}") from None


# --- what is measured -------------------------------------------------------------------------------------

@dataclass
class Source:
    """The model measured: its folder (a Llama-family HF folder), its dims, its search space and a label."""

    decoder: DecoderSource
    arch: ArchSpec
    space: SearchSpace
    label: str
    tied: bool


def resolve_source(model: str | None = None, supernet: str | None = None) -> Source:
    """The bundled SmolLM2 (default), a Llama-family HF folder (`model`), or a trained causal-LM run
    (`supernet`: the run folder or its supernet/ folder; its search space picks the sub-networks)."""
    from transformers import AutoConfig

    from mlfs_edge.assets import smollm2_path

    if model and supernet:
        raise ValueError("give --model or --supernet, not both")
    space_dict = None
    if supernet:
        folder = Path(supernet)
        if (folder / "supernet" / "config.json").is_file():
            folder = folder / "supernet"
        if not (folder / "config.json").is_file():
            raise ValueError(f"{supernet} is neither a training run folder (with supernet/) nor a supernet folder")
        train_json = folder.parent / "mlfs_train.json"
        if train_json.is_file():
            space_dict = json.loads(train_json.read_text()).get("search_space")
        label = f"supernet {folder}"
    elif model:
        folder = Path(model)
        if not (folder / "config.json").is_file():
            raise ValueError(f"{model} is not a model folder (no config.json)")
        label = str(folder)
    else:
        folder = smollm2_path()
        label = "SmolLM2-135M-Instruct (bundled)"
    config = AutoConfig.from_pretrained(folder)
    fam = check_stage(config, "engine")  # it times the engine: a family the engine runs
    if fam.kind != "decoder":
        raise ValueError(f"{folder} is a {fam.name} encoder; `bench generate` measures decoders")
    arch = ArchSpec.from_hf_config(config)
    if space_dict:
        space = SearchSpace.from_dict(arch, space_dict)
    else:  # widths only, every layer kept: the shapes a sub-network of the bundled model slices to
        space = SearchSpace.default(arch, depths=(arch.num_layers,))
    tied = bool(getattr(config, "tie_word_embeddings", True))
    bundled = not model and not supernet
    return Source(DecoderSource(folder, bundled), arch, space, label, tied)


def _smollm2_shapes(source: Source) -> bool:
    """Whether the source has the bundled SmolLM2's dims (asked only when llama.cpp is to run: a trained
    supernet of it has them; its GGUF then measures the same shapes). Updates source.decoder."""
    if source.decoder.smollm2_shapes:
        return True
    from transformers import AutoConfig

    from mlfs_edge.assets import smollm2_path

    same = ArchSpec.from_hf_config(AutoConfig.from_pretrained(smollm2_path())) == source.arch
    source.decoder = DecoderSource(source.decoder.folder, same)
    return same


def default_subnets(space: SearchSpace, targets: Sequence[float] = SUBNET_TARGETS) -> list[SubnetConfig]:
    """For each target share of the layer parameters, the space's uniform sub-network closest to it (within
    a percent: the deeper, then the more heads), among widths a 4-bit file can slice to (multiples of its
    32-wide groups). Bundled SmolLM2: L30-H6-F768 (54 %) and L30-H3-F384 (27 %)."""
    arch = space.arch
    full = SubnetConfig.full(arch)
    candidates = [c for c in space.uniform_configs()
                  if c != full and c.mlp[0] % 32 == 0 and (c.heads[0] * arch.head_dim) % 32 == 0]
    if not candidates:
        raise ValueError("the search space has no sub-network a 4-bit file can slice (widths multiples of 32); "
                         "give --subnet")
    out: list[SubnetConfig] = []
    for target in targets:
        # distances within a percent count as ties: then the deeper, then the more heads
        best = min(candidates, key=lambda c: (round(abs(c.param_fraction(arch) - target), 2), -c.depth, -c.heads[0]))
        if best not in out:
            out.append(best)
    return out


def prompt_ids(folder: Path, n: int) -> list[int]:
    """The first `n` tokens of the held-out (test) bundled news text, with the model's tokenizer."""
    from transformers import AutoTokenizer

    from mlfs_edge.data import load_text
    from mlfs_edge.lm import token_stream

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = token_stream(tokenizer, load_text("news").test, max_tokens=n)
    if len(ids) < n:
        raise ValueError(f"the held-out news text has only {len(ids)} tokens; ask for fewer --prompt-tokens")
    return ids


def read_bandwidth_gbs(mib: int = 256, repeats: int = 5) -> dict[str, float]:
    """This machine's single-thread memory read bandwidth: the best of numpy reductions (sum, max) over a
    `mib` MiB float32 array (far beyond the caches), GB/s (1e9 bytes/s)."""
    import numpy as np

    a = np.ones(mib * 2**20 // 4, np.float32)
    best: dict[str, float] = {}
    for name, fn in (("sum", a.sum), ("max", a.max)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best[name] = a.nbytes / min(times) / 1e9
    return {"read_gb_s": max(best.values()), **{f"{k}_gb_s": v for k, v in best.items()}, "array_mib": mib}


# --- workers ----------------------------------------------------------------------------------------------

class Worker:
    """One persistent measuring process: `python -m mlfs_edge.eval.bench_generate --worker`, JSON lines in
    and out (its stderr goes to a log file, quoted when it fails)."""

    def __init__(self, name: str, spec: dict[str, Any], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name.replace('/', '_')}.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        env.pop("OMP_NUM_THREADS", None)  # each worker sets its runtime's thread count per call
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "mlfs_edge.eval.bench_generate", "--worker"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                         env=env)
        self._send(spec)

    def _send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise RuntimeError(f"worker {self.name} exited: {self._last_log_line()}") from None

    def reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], REPLY_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise RuntimeError(f"worker {self.name} gave no answer: {self._last_log_line()}")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"worker {self.name}: {out['error']}")
        return out

    def ask(self, msg: dict[str, Any]) -> dict[str, Any]:
        self._send(msg)
        return self.reply()

    def _last_log_line(self) -> str:
        lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1] if lines else f"exit code {self.proc.poll()}"

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _vm(field_name: str) -> float:
    """A /proc/self/status size in MiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> None:
    """Trim the heap and restart the peak counter (VmHWM) at the current resident set."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _serve(inp: TextIO, out: TextIO) -> None:
    """The worker's loop: the first message loads (backend, dtype, artefact), then one answer per request."""
    spec = json.loads(inp.readline())
    backend, dtype = spec["backend"], spec["dtype"]
    generator = engine = None
    if spec.get("probe"):  # the engine's own measurements: the Engine itself, loaded once
        from mlfs_edge.runtime import Engine

        engine = Engine.load(spec["artefact"]["path"])
        size = engine.file_size
    else:
        generator = decoder_adapter(backend).load_decoder(spec["artefact"], dtype, spec["threads"])
        size = generator.size_bytes
    out.write(json.dumps({"ok": True, "size_bytes": size}) + "\n")
    out.flush()
    for line in inp:
        msg = json.loads(line)
        try:
            if msg["op"] == "generate" and generator is not None:
                t = generator.generate(msg["prompt"], msg["new_tokens"], msg["threads"], msg.get("subnet"))
                reply: dict[str, Any] = {"prefill_s": t.prefill_s, "decode_s": t.decode_s, "tokens": t.tokens}
            elif msg["op"] == "peak_rss":
                reply = {"peak_rss_mb": _vm("VmHWM"), "rss_mb": _vm("VmRSS")}
            elif msg["op"] in ("switch", "kv") and engine is not None:
                reply = (_switch_probe if msg["op"] == "switch" else _kv_probe)(engine, msg)
            else:
                reply = {"error": f"op {msg['op']!r} is not served by this worker"}
        except Exception as e:
            reply = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def _switch_probe(engine: Any, msg: dict[str, Any]) -> dict[str, Any]:
    """The time to switch sub-network between two generations: starting a generation (the sub-network is
    bound there: validation and the cache's layout) on the other config vs on the same one, medians of
    `repeats`; and the resident set before and after `generations` 1-token generations alternating
    between the two, both already warm: weights are strided into, never copied, so it does not move."""
    import numpy as np

    a, b = (SubnetConfig.from_dict(d) for d in msg["subnets"])
    ids = np.asarray(msg["prompt"][:1], np.int64)
    threads, repeats = msg["threads"], msg.get("repeats", 200)

    def start(cfg: SubnetConfig) -> float:
        t0 = time.perf_counter()
        engine.stream(ids, subnet=cfg, max_new_tokens=1, stop_tokens=[], threads=threads)
        return time.perf_counter() - t0

    for cfg in (a, b):  # warm: page in both slices' weights
        engine.generate(ids, subnet=cfg, max_new_tokens=2, stop_tokens=[], threads=threads)
    switch = statistics.median(start((a, b)[i % 2]) for i in range(repeats)) * 1e6
    same = statistics.median(start(a) for _ in range(repeats)) * 1e6
    rss0 = _vm("VmRSS")
    for i in range(msg.get("generations", 20)):
        engine.generate(ids, subnet=(a, b)[i % 2], max_new_tokens=1, stop_tokens=[], threads=threads)
    rss1 = _vm("VmRSS")
    return {"switch_us": switch, "same_config_us": same, "rss_before_mb": rss0, "rss_after_mb": rss1,
            "rss_delta_mb": rss1 - rss0, "file_bytes": engine.file_size}


def _kv_probe(engine: Any, msg: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of a generation of each length (the full model, greedy, no stop token), each counted from
    a reset after the previous one was freed, with the KV cache's own size."""
    import numpy as np

    ids = np.asarray(msg["prompt"], np.int64)
    threads = msg["threads"]
    engine.generate(ids[:16], max_new_tokens=2, stop_tokens=[], threads=threads)  # page the weights in
    out = []
    for n in msg["tokens"]:
        _reset_peak()
        before = _vm("VmRSS")
        stream = engine.stream(ids, max_new_tokens=n, stop_tokens=[], threads=threads)
        generated = sum(1 for _ in stream)
        out.append({"new_tokens": generated, "positions": len(ids) + generated, "rss_before_mb": before,
                    "peak_rss_mb": _vm("VmHWM"), "cache_bytes": stream.cache_bytes})
        del stream
    return {"runs": out}


def worker_main() -> None:
    # the protocol owns the real stdout; anything a library prints goes to stderr (the log file)
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        _serve(sys.stdin, out)
    except Exception as e:
        out.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
        out.flush()
        sys.exit(1)


# --- the benchmark ----------------------------------------------------------------------------------------

@dataclass
class Cell:
    """One row: a worker, a sub-network (None: the full model) and a thread count; its timings."""

    worker: str
    backend: str
    dtype: str
    subnet_name: str
    subnet: dict[str, Any] | None
    threads: int
    prefill_tok_s: list[float] = field(default_factory=list)
    decode_tok_s: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)


def run_bench_generate(settings: GenerateSettings = GenerateSettings(), model: str | None = None,
                       supernet: str | None = None, json_path: Path | None = None, plot_path: Path | None = None,
                       command: str = "", note: str = "", progress: bool = True,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure, print the tables, write the JSON (and the plot beside it); return the result."""
    from tqdm.auto import tqdm

    settings.validate()
    source = resolve_source(model, supernet)
    arch = source.arch
    full = SubnetConfig.full(arch)
    subnets = ([SubnetConfig.parse(s, arch) for s in settings.subnets] if settings.subnets
               else default_subnets(source.space))
    subnets = [c for c in subnets if c != full]
    prompt = prompt_ids(source.decoder.folder, settings.prompt_tokens)
    work_dir = Path(settings.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)

    skipped: list[str] = []
    artefacts: dict[tuple[str, str], dict[str, Any]] = {}
    log_dir = Path(tempfile.mkdtemp(prefix="bench-generate-logs-"))
    workers: dict[str, Worker] = {}
    cells: list[Cell] = []
    try:
        # the slow loads first (PyTorch's imports), each backend's workers started as soon as its files exist
        for backend in sorted(settings.backends, key=lambda b: b != "pytorch"):
            adapter = decoder_adapter(backend)
            wanted = tuple(d for d in adapter.DECODER_DTYPES if d in settings.dtypes)
            if not wanted:
                continue
            reason = adapter.decoder_unavailable_reason()
            if reason is None and backend == "llama.cpp" and not _smollm2_shapes(source):
                reason = f"llama.cpp runs the bundled SmolLM2 GGUF; {source.label} has other shapes (no GGUF of it)"
            if reason:
                skipped.append(f"{backend}: {reason}")
                log(f"[bench generate] no {backend} rows: {reason}")
                continue
            if progress:
                log(f"[bench generate] preparing {backend} {', '.join(wanted)}")
            for dtype, artefact in adapter.build_decoder(source.decoder, wanted, work_dir).items():
                artefact = {**artefact, "n_ctx": settings.prompt_tokens + settings.new_tokens + 16}
                artefacts[backend, dtype] = artefact
                workers[f"{backend}-{dtype}"] = Worker(f"{backend}-{dtype}", {
                    "backend": backend, "dtype": dtype, "artefact": artefact, "threads": max(settings.threads)},
                    log_dir)
        if not artefacts:
            raise ValueError("nothing to measure: " + "; ".join(skipped or ["no backend has the dtypes asked for"]))
        sizes = {name: w.reply()["size_bytes"] for name, w in workers.items()}  # loaded side by side
        order = {b: i for i, b in enumerate(settings.backends)}
        artefacts = dict(sorted(artefacts.items(), key=lambda kv: order[kv[0][0]]))
        for t in settings.threads:
            for (backend, dtype) in artefacts:
                sliced = [("full", None)]
                if DECODER_ADAPTERS[backend].SLICES:
                    sliced += [(c.name, c.to_dict()) for c in subnets]
                for sub_name, sub in sliced:
                    cells.append(Cell(f"{backend}-{dtype}", backend, dtype, sub_name, sub, t))
        total = len(cells) * (settings.rounds + 1)
        bar = tqdm(total=total, desc=f"generate ({len(cells)} rows x {settings.rounds} rounds, round-robin)",
                   unit="gen", disable=not progress)
        for cell in cells:  # warm-up: page the weights in, size the caches
            workers[cell.worker].ask({"op": "generate", "prompt": prompt[:WARMUP_PROMPT], "new_tokens": WARMUP_NEW,
                                      "threads": cell.threads, "subnet": cell.subnet})
            bar.update()
        for r in range(settings.rounds):
            shift = (r * len(cells)) // settings.rounds
            for cell in cells[shift:] + cells[:shift]:
                bar.set_postfix_str(f"{cell.worker} {cell.subnet_name} {cell.threads}t")
                out = workers[cell.worker].ask({"op": "generate", "prompt": prompt,
                                                "new_tokens": settings.new_tokens, "threads": cell.threads,
                                                "subnet": cell.subnet})
                cell.prefill_tok_s.append(len(prompt) / out["prefill_s"])
                cell.decode_tok_s.append((out["tokens"] - 1) / out["decode_s"] if out["decode_s"] > 0 else 0.0)
                cell.tokens.append(out["tokens"])
                bar.update()
        bar.close()
        peaks = {name: w.ask({"op": "peak_rss"})["peak_rss_mb"] for name, w in workers.items()}
        for name in list(workers):  # the probes measure memory and bandwidth: the workers step aside
            workers.pop(name).close()
        bandwidth = read_bandwidth_gbs()
        switch = kv = None
        engine_dtypes = [d for b, d in artefacts if b == "mlfs"]
        if engine_dtypes:
            probe_dtype = "int8" if "int8" in engine_dtypes else engine_dtypes[0]
            if progress:
                log(f"[bench generate] engine {probe_dtype}: sub-network switch, KV memory after "
                    f"{settings.kv_tokens[0]} and {settings.kv_tokens[1]} tokens")
            probe = Worker("mlfs-probe", {"backend": "mlfs", "dtype": probe_dtype, "probe": True,
                                          "artefact": artefacts["mlfs", probe_dtype],
                                          "threads": max(settings.threads)}, log_dir)
            workers["mlfs-probe"] = probe
            probe.reply()
            smallest = min(subnets, key=lambda c: c.layer_params(arch)) if subnets else full
            switch = {"dtype": probe_dtype, "between": [full.name, smallest.name],
                      **probe.ask({"op": "switch", "subnets": [full.to_dict(), smallest.to_dict()],
                                   "prompt": prompt, "threads": max(settings.threads)})}
            kv = {"dtype": probe_dtype, "threads": max(settings.threads), "prompt_tokens": len(prompt),
                  **probe.ask({"op": "kv", "tokens": list(settings.kv_tokens), "prompt": prompt,
                               "threads": max(settings.threads)})}
    finally:
        for w in workers.values():
            w.close()
        shutil.rmtree(log_dir, ignore_errors=True)

    rows = [{"backend": c.backend, "subnet": c.subnet_name, "dtype": c.dtype, "threads": c.threads,
             "prompt_tokens": len(prompt), "new_tokens": min(c.tokens),
             "prefill_tok_s": round(statistics.median(c.prefill_tok_s), 2),
             "decode_tok_s": round(statistics.median(c.decode_tok_s), 2),
             "peak_rss_mb": round(peaks[c.worker], 1), "file_bytes": sizes[c.worker]} for c in cells]
    by_name = {"full": full, **{c.name: c for c in subnets}}
    result: dict[str, Any] = {
        "command": command,
        "note": note,
        "cpu": {"model": _cpu_model(), "machine": platform.machine(), "logical_cpus": os.cpu_count()},
        "model": source.label,
        "prompt": f"the first {len(prompt)} tokens of the held-out bundled news text",
        "settings": {"prompt_tokens": settings.prompt_tokens, "new_tokens": settings.new_tokens,
                     "threads": list(settings.threads), "rounds": settings.rounds,
                     "kv_tokens": list(settings.kv_tokens)},
        "subnets": {name: {**cfg.to_dict(), "param_fraction": round(cfg.param_fraction(arch), 4)}
                    for name, cfg in by_name.items()},
        "rows": rows,
        "spread": [{"backend": c.backend, "subnet": c.subnet_name, "dtype": c.dtype, "threads": c.threads,
                    "decode_tok_s_all": [round(v, 2) for v in c.decode_tok_s],
                    "prefill_tok_s_all": [round(v, 2) for v in c.prefill_tok_s]} for c in cells],
        "skipped": skipped,
        "switch": switch,
        "kv_memory": kv,
        "bandwidth": {**{k: round(v, 2) for k, v in bandwidth.items()},
                      "decode": decode_bandwidth(rows, arch, by_name, source.tied)},
    }
    result["targets"] = targets(rows, subnets[0].name if subnets else None)
    if "llama.cpp" in {r["backend"] for r in rows}:
        result["gguf"] = _gguf_info({d: a["path"] for (b, d), a in artefacts.items() if b == "llama.cpp"})
    print(report(result))
    if json_path:
        from mlfs_edge.atomic import write_atomically

        payload = json.dumps(result, indent=1)
        write_atomically(Path(json_path), lambda tmp: tmp.write_text(payload))
        plot_path = plot_path or Path(json_path).with_suffix(".png")
        log(f"wrote {json_path}")
    if plot_path:
        from mlfs_edge.atomic import write_atomically

        write_atomically(Path(plot_path), lambda tmp: plot(result, tmp))
        log(f"wrote {plot_path}")
    return result


def _cpu_model() -> str:
    from mlfs_edge.runtime import cpu_model

    return cpu_model()


def _gguf_info(paths: dict[str, str]) -> dict[str, Any]:
    """Each GGUF's path and size."""
    return {dtype: {"path": path, "bytes": os.path.getsize(path)} for dtype, path in paths.items()}


def weight_bytes_per_token(file_bytes: int, arch: ArchSpec, cfg: SubnetConfig, tied: bool) -> float:
    """≈ weight bytes a decode step reads: the sub-network's layer weights and the whole LM head (one row
    of the embedding table besides), at the file's mean bytes per parameter (file size / parameters in it:
    the layers and the embedding table, plus an untied head)."""
    table = arch.vocab_size * arch.hidden
    in_file = SubnetConfig.full(arch).layer_params(arch) + table * (1 if tied else 2)
    return file_bytes / in_file * (cfg.layer_params(arch) + table)


def decode_bandwidth(rows: list[dict[str, Any]], arch: ArchSpec, subnets: dict[str, SubnetConfig],
                     tied: bool) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        cfg = subnets.get(r["subnet"])
        if cfg is None or not r["decode_tok_s"]:
            continue
        per_token = weight_bytes_per_token(r["file_bytes"], arch, cfg, tied)
        out.append({"backend": r["backend"], "dtype": r["dtype"], "subnet": r["subnet"], "threads": r["threads"],
                    "weight_mb_per_token": round(per_token / 1e6, 2),
                    "weight_gb_s": round(per_token * r["decode_tok_s"] / 1e9, 2)})
    return out


def targets(rows: list[dict[str, Any]], half: str | None) -> list[dict[str, Any]]:
    """The issue's ratios from the medians of this run (pairs not measured are left out, not invented)."""
    med = {(r["backend"], r["dtype"], r["subnet"], r["threads"]): r for r in rows}
    out = []

    def add(what: str, a: tuple[str, str, str], b: tuple[str, str, str], metric: str, target: float) -> None:
        for t in sorted({r["threads"] for r in rows}):
            ra, rb = med.get((*a, t)), med.get((*b, t))
            if ra and rb and rb[metric]:
                ratio = ra[metric] / rb[metric]
                out.append({"what": what, "threads": t, "ratio": round(ratio, 3), "target": target,
                            "met": ratio >= target})

    add("engine int8 decode / llama.cpp Q8_0 decode", ("mlfs", "int8", "full"), ("llama.cpp", "q8_0", "full"),
        "decode_tok_s", 1.2)
    add("engine q4 decode / llama.cpp Q4_0 decode", ("mlfs", "q4", "full"), ("llama.cpp", "q4_0", "full"),
        "decode_tok_s", 1.0)
    add("engine int8 prefill / llama.cpp Q8_0 prefill", ("mlfs", "int8", "full"), ("llama.cpp", "q8_0", "full"),
        "prefill_tok_s", 2.0)
    if half:
        for dtype in ("fp32", "fp16", "int8", "q4"):
            add(f"engine {dtype} {half} decode / full decode", ("mlfs", dtype, half), ("mlfs", dtype, "full"),
                "decode_tok_s", 1.6)
    return out


def report(result: dict[str, Any]) -> str:
    """The tables printed at the end: rows, targets, switch, KV memory, bandwidth."""
    from mlfs_edge.report import markdown_table

    shown = [{"backend": r["backend"], "dtype": r["dtype"], "subnet": r["subnet"], "threads": r["threads"],
              "prefill tok/s": f"{r['prefill_tok_s']:.1f}", "decode tok/s": f"{r['decode_tok_s']:.1f}",
              "peak RSS MB": f"{r['peak_rss_mb']:.0f}", "file MB": f"{r['file_bytes'] / 1e6:.1f}"}
             for r in result["rows"]]
    parts = [markdown_table(shown)]
    if result["targets"]:
        parts.append(markdown_table([{"target (same run)": t["what"], "threads": t["threads"],
                                      "ratio": f"{t['ratio']:.2f}", "aim": f">= {t['target']:g}",
                                      "met": "yes" if t["met"] else "no"} for t in result["targets"]]))
    for s in result["skipped"]:
        parts.append(f"skipped: {s}")
    sw = result.get("switch")
    if sw:
        parts.append(f"sub-network switch between generations ({sw['dtype']}, {' <-> '.join(sw['between'])}): "
                     f"{sw['switch_us']:.1f} us to start a generation on the other config ({sw['same_config_us']:.1f} "
                     f"us on the same); RSS over 1-token generations alternating: {sw['rss_before_mb']:.1f} -> "
                     f"{sw['rss_after_mb']:.1f} MB ({sw['rss_delta_mb']:+.2f}): no weight byte copied")
    kv = result.get("kv_memory")
    if kv:
        parts.append(f"KV memory (engine {kv['dtype']}, {kv['prompt_tokens']}-token prompt): " + "; ".join(
            f"{r['new_tokens']} new tokens: peak RSS {r['peak_rss_mb']:.1f} MB, "
            f"cache {r['cache_bytes'] / 2**20:.2f} MiB"
            for r in kv["runs"]))
    bw = result["bandwidth"]
    full = [b for b in bw["decode"] if b["subnet"] == "full"]
    if full:
        parts.append(f"decode's effective weight bandwidth (weight bytes per token x decode tok/s; this machine's "
                     f"single-thread read bandwidth: {bw['read_gb_s']:.1f} GB/s):\n" + markdown_table(
                         [{"backend": b["backend"], "dtype": b["dtype"], "threads": b["threads"],
                           "MB/token": f"{b['weight_mb_per_token']:.1f}", "GB/s": f"{b['weight_gb_s']:.2f}",
                           "share of read bw": f"{b['weight_gb_s'] / bw['read_gb_s']:.0%}"} for b in full]))
    return "\n\n".join(parts)


COLORS = {"mlfs": "tab:red", "llama.cpp": "tab:purple", "pytorch": "tab:blue"}


def plot(result: dict[str, Any], path: str | Path) -> None:
    """Prefill and decode tokens/s per row (bars: backend / dtype / sub-network), one panel each, the
    thread counts side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = result["rows"]
    labels = list(dict.fromkeys(f"{r['backend']} {r['dtype']} {r['subnet']}" for r in rows))
    threads = sorted({r["threads"] for r in rows})
    hatches = ["", "//", "xx", ".."]
    width = 0.8 / len(threads)
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.55 * len(labels) + 2), 8), sharex=True)
    for ax, metric, title in ((axes[0], "prefill_tok_s", "prefill"), (axes[1], "decode_tok_s", "decode")):
        for i, t in enumerate(threads):
            vals = {f"{r['backend']} {r['dtype']} {r['subnet']}": r[metric] for r in rows if r["threads"] == t}
            xs = [k + (i - (len(threads) - 1) / 2) * width for k in range(len(labels))]
            colors = [COLORS.get(lab.split()[0], "gray") for lab in labels]
            ax.bar(xs, [vals.get(lab, 0.0) for lab in labels], width, color=colors, hatch=hatches[i % len(hatches)],
                   edgecolor="black", linewidth=0.4)
        ax.set_ylabel(f"{title} tokens/s")
        ax.grid(True, axis="y", alpha=0.3)
    handles = [Patch(color=c, label=b) for b, c in COLORS.items() if any(r["backend"] == b for r in rows)]
    handles += [Patch(facecolor="white", edgecolor="black", hatch=hatches[i % len(hatches)],
                      label=f"{t} thread{'s' if t > 1 else ''}") for i, t in enumerate(threads)]
    axes[0].legend(handles=handles, fontsize=8)
    axes[1].set_xticks(range(len(labels)))
    axes[1].set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    s = result["settings"]
    fig.suptitle(f"{result['model']}: {s['prompt_tokens']}-token prompt, {s['new_tokens']} greedy tokens "
                 f"({result['cpu']['model']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    worker_main()
