"""llama.cpp through ``llama-cpp-python`` (built from source by ``make bench-setup``, as its users build
it: ``GGML_NATIVE=ON``): the runtime edge-LLM users already pick, as the peer of the engine's decoder.

It has no sub-networks and reads GGUF files only, so it runs the bundled SmolLM2-135M-Instruct: the
shipped ``Q4_1`` GGUF requantized by llama.cpp's own ``llama_model_quantize`` (``allow_requantize``) to
F16 / Q8_0 / Q4_0 — the same weight values the project dequantizes from that file (its tensor types
are llama.cpp's defaults for each file type). The files are cached in ``cache_dir()/gguf`` and made
only when missing. Generation: the prompt's ids are fed as ids (``Llama.eval``, no tokenizer in the
way), then one token at a time, greedy (arg-max of the last logits), no stop token.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlfs_edge.eval.backends import DecoderSource, Generator, Timing

NAME = "llama.cpp"
DTYPES: tuple[str, ...] = ()  # no encoder rows
BUILD_IN_WORKER = False
DTYPES_APART = True
DECODER_DTYPES = ("f16", "q8_0", "q4_0")
SLICES = False
FTYPES = {"f16": 1, "q4_0": 2, "q8_0": 7}  # llama_ftype: LLAMA_FTYPE_MOSTLY_F16 / _Q4_0 / _Q8_0
VERSION = "0.3.36"  # the version `make bench-setup` builds (constraints.txt)
SETUP_HINT = "`make bench-setup` builds it (llama-cpp-python from source, 10-20 min on 2 cores)"


def decoder_unavailable_reason() -> str | None:
    """None when llama_cpp imports; else one line naming the make target that adds its rows."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return f"llama-cpp-python is not installed: {SETUP_HINT}"
    except Exception as e:  # a broken build (missing shared library, ...)
        return f"llama-cpp-python does not load ({type(e).__name__}: {e}): {SETUP_HINT}"
    return None


@contextlib.contextmanager
def _quiet_fds() -> Iterator[None]:
    """llama.cpp logs to the process's stdout/stderr from C: silence both file descriptors."""
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def gguf_path(dtype: str) -> Path:
    from mlfs_edge.assets import cache_dir

    return cache_dir() / "gguf" / f"SmolLM2-135M-Instruct.{dtype.upper()}.gguf"


def requantize(dtype: str) -> Path:
    """The bundled Q4_1 GGUF as `dtype` through llama.cpp's own quantizer; cached, made when missing."""
    import ctypes

    import llama_cpp

    from mlfs_edge.assets import asset_path

    if dtype not in FTYPES:
        raise ValueError(f"llama.cpp rows are {', '.join(DECODER_DTYPES)}, not {dtype!r}")
    out = gguf_path(dtype)
    if out.is_file():
        return out
    src = asset_path("smollm2-gguf")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[dtype]
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    try:
        with _quiet_fds():
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize({src.name} -> {dtype}) returned {rc}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def build_decoder(source: DecoderSource, dtypes: tuple[str, ...], out_dir: Path) -> dict[str, dict[str, Any]]:
    if not source.smollm2_shapes:
        raise ValueError(f"llama.cpp runs the bundled SmolLM2 GGUF only; {source.folder} has other shapes")
    return {d: {"path": str(requantize(d))} for d in dtypes}


def load_decoder(artefact: dict[str, Any], dtype: str, threads: int = 1) -> Generator:
    import llama_cpp

    path = artefact["path"]
    n_ctx = int(artefact.get("n_ctx", 2048))
    with _quiet_fds():
        llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_threads=threads, n_threads_batch=threads,
                              logits_all=False, verbose=False)
    n_vocab = llm.n_vocab()

    def last_argmax() -> int:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
        return int(logits.argmax())

    def generate(prompt_ids: Sequence[int], new_tokens: int, threads: int, subnet: Any = None) -> Timing:
        if subnet is not None:
            raise ValueError("llama.cpp runs the full model only")
        if len(prompt_ids) + new_tokens > n_ctx:
            raise ValueError(f"{len(prompt_ids)} + {new_tokens} tokens exceed the context of {n_ctx}")
        llama_cpp.llama_set_n_threads(llm.ctx, threads, threads)
        llm.reset()  # position 0; eval() then drops the old cache entries
        t0 = time.perf_counter()
        llm.eval(list(prompt_ids))
        token = last_argmax()
        t1 = time.perf_counter()
        for _ in range(new_tokens - 1):
            llm.eval([token])
            token = last_argmax()
        return Timing(t1 - t0, time.perf_counter() - t1, new_tokens)

    return Generator(generate, os.path.getsize(path))
