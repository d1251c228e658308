"""One adapter per outside runtime, in one place. Encoders (shared by `mlfs-edge compare` and
`mlfs-edge bench engine`): PyTorch eager, ONNX Runtime, ExecuTorch (XNNPACK) and the native engine.
Decoders (`mlfs-edge bench generate`, see "The decoder face" below): the native engine, llama.cpp
and PyTorch ``generate``.

Each adapter is one module with the same four names:

    NAME                 the backend's name in tables ("pytorch", "onnxruntime", ...)
    DTYPES               the weight formats it runs, a subset of ("fp32", "fp16", "int8")
    BUILD_IN_WORKER      True when building takes tens of seconds (an export): `compare` then builds
                         in a pool of processes, one per core; False: built in the calling process
    DTYPES_APART         True when each dtype's artefact is built on its own (so the pool can build
                         them side by side); False when one is made from another (ONNX int8 from fp32)
    build(subject, dtypes, out_dir) -> {dtype: artefact}
                         writes what the runtime loads under out_dir and describes it in a
                         JSON-able dict (paths, output kind, sub-network); re-uses finished files
    load(artefact, dtype, threads) -> Runner
                         loads an artefact, ready to predict, at `threads` threads to start with

Adding a runtime is one new module here and one entry in ``ADAPTERS``. Adapters import their runtime
lazily, inside build/load, so a measuring process imports only the runtime it measures.

The decoder face (a causal LM generating greedily from token ids), in the modules of
``DECODER_ADAPTERS`` (engine, llama_cpp, pytorch):

    NAME                 as above ("mlfs", "llama.cpp", "pytorch")
    DECODER_DTYPES       the weight formats it generates with ("fp32", "q4", "q8_0", ...)
    SLICES               True when one artefact runs any sub-network (the engine); False: the full
                         model only
    decoder_unavailable_reason() -> str | None
                         why it cannot run here (its package not installed, ...), None when it can
    build_decoder(source, dtypes, out_dir) -> {dtype: artefact}
                         `source` a DecoderSource; re-uses finished files
    load_decoder(artefact, dtype, threads) -> Generator
                         loads an artefact, ready to generate
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

# the same three as mlfs_edge.export.manifest.DTYPES, not imported from there: that package imports torch,
# and the ONNX Runtime and engine measuring processes must not
DTYPES = ("fp32", "fp16", "int8")


@dataclass
class Runner:
    """A loaded artefact. `predict(input_ids, attention_mask)` takes int64 [1, seq] numpy arrays and
    returns float32 [1, labels or hidden]; `set_threads(n)` changes the thread count (ExecuTorch
    cannot: it raises for any other count than the one it was loaded with); `size_bytes` is the
    artefact's size (file on disk, or the weights in memory for PyTorch)."""

    predict: Callable[[np.ndarray, np.ndarray], np.ndarray]
    set_threads: Callable[[int], None]
    size_bytes: int


@dataclass
class Subject:
    """What is measured: sub-network `subnet` of `source` (an importance-ordered Hugging Face encoder:
    a classifier for output "logits", any encoder for "embedding")."""

    source: Any
    tokenizer: Any
    subnet: Any  # mlfs_edge.config.SubnetConfig, relative to `source`
    output: str = "logits"  # "logits" (a classifier) or "embedding" (masked-mean sentence embedding)
    calibration: tuple[str, ...] = ()  # real sentences (ExecuTorch int8 traces its observers on one)
    max_length: int = 128  # longest input the exported artefacts accept
    _model: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.subnet.name

    @property
    def model(self) -> Any:
        """The sub-network as a standalone model (extracted on first use)."""
        if self._model is None:
            from mlfs_edge.supernet import extract

            self._model = extract(self.source, self.subnet).eval()
        return self._model

    @property
    def layer_params(self) -> int:
        """Parameters in the sub-network's layers (what sizes its exports and its latency)."""
        from mlfs_edge.config import ArchSpec

        return self.subnet.layer_params(ArchSpec.from_hf_config(self.source.config))

    def hf_folder(self, out_dir: Path) -> Path:
        """The sub-network saved as a Hugging Face folder (model + tokenizer) under out_dir/<name>/hf."""
        from mlfs_edge.models import save_atomically

        path = Path(out_dir) / self.name / "hf"
        if not (path / "config.json").is_file():
            save_atomically(self.model, self.tokenizer, path, {"subnet": self.subnet.to_dict()})
        return path


# --- the decoder face ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timing:
    """One greedy generation, timed by the wall clock around the runtime's own calls (one clock for
    every backend). prefill_s: from the call to the first new token (the prompt's forward and the
    first token); decode_s: the other ``tokens - 1`` new tokens."""

    prefill_s: float
    decode_s: float
    tokens: int

    def prefill_tok_s(self, prompt_tokens: int) -> float:
        return prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        return (self.tokens - 1) / self.decode_s if self.decode_s > 0 and self.tokens > 1 else 0.0


class GenerateFn(Protocol):
    def __call__(self, prompt_ids: Sequence[int], new_tokens: int, threads: int,
                 subnet: Any = None) -> Timing: ...


@dataclass
class Generator:
    """A loaded decoder. ``generate(prompt_ids, new_tokens, threads, subnet=None)`` continues the ids
    greedily for exactly `new_tokens` tokens (no stop token) at `threads` threads and returns the
    Timing; `subnet` (a SubnetConfig) only where the adapter SLICES. `size_bytes`: the artefact's
    size on disk (the one packed file, the GGUF, the safetensors)."""

    generate: GenerateFn
    size_bytes: int


@dataclass(frozen=True)
class DecoderSource:
    """What a decoder backend builds from: a Llama-family Hugging Face folder (the bundled SmolLM2 or a
    trained supernet folder), and whether it is the bundled SmolLM2's shapes (llama.cpp then runs the
    shipped GGUF of the same weights: it has no sub-networks and no converter for our folders)."""

    folder: Path
    smollm2_shapes: bool = False


def _adapters() -> dict[str, ModuleType]:
    from mlfs_edge.eval.backends import engine, executorch, onnxruntime, pytorch

    return {m.NAME: m for m in (pytorch, executorch, onnxruntime, engine)}


def _decoder_adapters() -> dict[str, ModuleType]:
    from mlfs_edge.eval.backends import engine, llama_cpp, pytorch

    return {m.NAME: m for m in (engine, llama_cpp, pytorch)}


ADAPTERS: dict[str, ModuleType] = _adapters()
BACKENDS = tuple(ADAPTERS)
DECODER_ADAPTERS: dict[str, ModuleType] = _decoder_adapters()
DECODER_BACKENDS = tuple(DECODER_ADAPTERS)


def adapter(name: str) -> ModuleType:
    if name not in ADAPTERS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(ADAPTERS)}")
    return ADAPTERS[name]


def load(backend: str, artefact: dict[str, Any], dtype: str, threads: int = 1) -> Runner:
    return adapter(backend).load(artefact, dtype, threads)


def decoder_adapter(name: str) -> ModuleType:
    if name not in DECODER_ADAPTERS:
        raise ValueError(f"unknown decoder backend {name!r}; choose from {', '.join(DECODER_ADAPTERS)}")
    return DECODER_ADAPTERS[name]
