"""`mlfs-edge bench generate` on a tiny random Llama (with the bundled SmolLM2 tokenizer): engine and
PyTorch rows, llama.cpp skipped with its reason (it runs the bundled GGUF only), the row schema, the
extra measurements, bad arguments as one-line errors; and the pieces (sub-network choice, targets)."""

from __future__ import annotations

import json

import pytest
from conftest import save_tiny_llama

from mlfs_edge.cli import main
from mlfs_edge.config import ArchSpec, SearchSpace, SubnetConfig
from mlfs_edge.eval.backends import DECODER_BACKENDS, Timing, decoder_adapter
from mlfs_edge.eval.bench_generate import ROW_KEYS, default_subnets, targets, weight_bytes_per_token

SMOLLM2 = ArchSpec("llama", 30, 576, 9, 3, 64, 1536, 49152, gated_mlp=True, bias=False)


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama_bench"), intermediate_size=128)


def test_bench_generate_on_a_tiny_llama(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "gen.json"
    assert main(["bench", "generate", "--model", str(tiny_llama_dir), "--prompt-tokens", "24", "--new-tokens", "6",
                 "--threads", "1,2", "--rounds", "2", "--dtypes", "fp32,int8,q4,q8_0", "--kv-tokens", "4,96",
                 "--work-dir", str(tmp_path / "work"), "--json", str(out), "--note", "test"]) == 0
    text = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert (tmp_path / "gen.png").stat().st_size > 0
    assert result["command"].startswith("mlfs-edge bench generate --model") and result["cpu"]["model"]
    rows = result["rows"]
    for r in rows:
        assert set(ROW_KEYS) <= set(r)
        assert r["prompt_tokens"] == 24 and r["new_tokens"] == 6
        assert r["prefill_tok_s"] > 0 and r["decode_tok_s"] > 0 and r["peak_rss_mb"] > 0 and r["file_bytes"] > 0
    # the sub-networks: the space's closest to 50 % and 25 % of the layer parameters, 4-bit sliceable
    subs = [n for n in result["subnets"] if n != "full"]
    assert len(subs) == 2 and all(result["subnets"][n]["mlp"][0] % 32 == 0 for n in subs)
    cells = {(r["backend"], r["dtype"], r["subnet"], r["threads"]) for r in rows}
    assert cells == ({("mlfs", d, s, t) for d in ("fp32", "int8", "q4") for s in ["full", *subs] for t in (1, 2)}
                     | {("pytorch", "fp32", "full", t) for t in (1, 2)})
    # the engine's rows share one packed file per dtype whatever the sub-network
    assert len({r["file_bytes"] for r in rows if r["backend"] == "mlfs" and r["dtype"] == "int8"}) == 1
    # llama.cpp: never rows for a model that is not the bundled SmolLM2, and a reason either way
    assert not any(r["backend"] == "llama.cpp" for r in rows)
    assert any(s.startswith("llama.cpp:") for s in result["skipped"]) and "skipped: llama.cpp" in text
    # the extra measurements
    sw = result["switch"]
    assert sw["switch_us"] > 0 and abs(sw["rss_delta_mb"]) < 4
    short, long = result["kv_memory"]["runs"]
    assert (short["new_tokens"], long["new_tokens"]) == (4, 96) and long["cache_bytes"] > short["cache_bytes"]
    bw = result["bandwidth"]
    assert bw["read_gb_s"] > 0 and {b["backend"] for b in bw["decode"]} == {"mlfs", "pytorch"}
    assert {t["what"].split()[1] for t in result["targets"]} == {"fp32", "int8", "q4"}  # sub-network / full only
    assert "engine int8" in text and "KV memory" in text and "switch" in text


@pytest.mark.parametrize("argv, message", [
    (["--threads", "0"], "--threads must be positive"),
    (["--threads", "one"], "--threads must be comma-separated integers"),
    (["--new-tokens", "0"], "--new-tokens must be at least 2"),
    (["--dtypes", "int4"], "unknown dtype 'int4'"),
    (["--backends", "tflite"], "unknown decoder backend 'tflite'"),
    (["--kv-tokens", "64,32"], "--kv-tokens must be two growing counts"),
    (["--rounds", "0"], "--rounds must be at least 1"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    assert main(["bench", "generate", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_bad_model_folder_is_one_line(tmp_path, capsys):
    assert main(["bench", "generate", "--model", str(tmp_path), "--backends", "mlfs"]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_default_subnets_are_half_and_quarter_and_4bit_sliceable():
    space = SearchSpace.default(SMOLLM2, depths=(30,))
    half, quarter = default_subnets(space)
    assert (half.heads[0], half.mlp[0], half.depth) == (6, 768, 30)
    assert half.param_fraction(SMOLLM2) == pytest.approx(0.54, abs=0.01)
    assert quarter.param_fraction(SMOLLM2) == pytest.approx(0.27, abs=0.01)
    trained = SearchSpace(SMOLLM2, (16, 20, 24, 27, 30), (3, 6, 9), (384, 768, 1152, 1536))
    for cfg, target in zip(default_subnets(trained), (0.5, 0.25), strict=True):
        assert abs(cfg.param_fraction(SMOLLM2) - target) < 0.03 and cfg.mlp[0] % 32 == 0


def test_targets_come_from_one_runs_medians():
    def row(backend, dtype, subnet, t, prefill, decode):
        return {"backend": backend, "dtype": dtype, "subnet": subnet, "threads": t, "prefill_tok_s": prefill,
                "decode_tok_s": decode}

    rows = [row("mlfs", "int8", "full", 1, 800, 130), row("llama.cpp", "q8_0", "full", 1, 400, 100),
            row("mlfs", "int8", "half", 1, 1500, 200), row("mlfs", "q4", "full", 1, 300, 90)]
    got = {(t["what"], t["threads"]): t for t in targets(rows, "half")}
    assert got["engine int8 decode / llama.cpp Q8_0 decode", 1]["ratio"] == 1.3
    assert got["engine int8 decode / llama.cpp Q8_0 decode", 1]["met"]
    assert got["engine int8 prefill / llama.cpp Q8_0 prefill", 1]["ratio"] == 2.0
    assert not got["engine int8 half decode / full decode", 1]["met"]  # 200 / 130 = 1.54 < 1.6
    assert not any("Q4_0" in what for what, _ in got)  # no llama.cpp q4_0 row: left out, not invented


def test_weight_bytes_per_token_counts_the_slice_and_the_head():
    full = SubnetConfig.full(SMOLLM2)
    file_bytes = 135_000_000
    assert weight_bytes_per_token(file_bytes, SMOLLM2, full, tied=True) == pytest.approx(file_bytes)
    half = SubnetConfig.uniform(SMOLLM2, heads=6, mlp=768)
    assert weight_bytes_per_token(file_bytes, SMOLLM2, half, tied=True) < 0.7 * file_bytes


def test_every_decoder_adapter_has_the_face():
    for name in DECODER_BACKENDS:
        a = decoder_adapter(name)
        assert name == a.NAME and a.DECODER_DTYPES and isinstance(a.SLICES, bool)
        for fn in ("decoder_unavailable_reason", "build_decoder", "load_decoder"):
            assert callable(getattr(a, fn))
    reason = decoder_adapter("llama.cpp").decoder_unavailable_reason()
    assert reason is None or "make bench-setup" in reason
    assert Timing(0.5, 2.0, 11).decode_tok_s == 5.0 and Timing(0.5, 2.0, 11).prefill_tok_s(64) == 128.0


def test_supernet_run_folder_gives_its_search_space(tiny_llama_dir, tmp_path):
    import shutil

    from mlfs_edge.eval.bench_generate import resolve_source

    run = tmp_path / "run"
    shutil.copytree(tiny_llama_dir, run / "supernet")
    arch = ArchSpec("llama", 2, 64, 4, 2, 16, 128, 49152, gated_mlp=True, bias=False)
    space = SearchSpace(arch, (1, 2), (2, 4), (32, 64, 128))
    (run / "mlfs_train.json").write_text(json.dumps({"search_space": space.to_dict()}))
    for given in (run, run / "supernet"):
        source = resolve_source(supernet=str(given))
        assert source.decoder.folder == run / "supernet" and source.space.depths == (1, 2)
        assert not source.decoder.smollm2_shapes and source.label.startswith("supernet ")
    with pytest.raises(ValueError, match="neither a training run folder"):
        resolve_source(supernet=str(tmp_path))
    with pytest.raises(ValueError, match="not both"):
        resolve_source(model=str(tiny_llama_dir), supernet=str(run))


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(decoder_adapter("llama.cpp").decoder_unavailable_reason() is not None,
                    reason="llama-cpp-python is not installed (`make bench-setup`)")
def test_llama_cpp_adapter_generates_from_ids_like_the_engine(tmp_path):
    """The requantized GGUF of the bundled SmolLM2 continues the news prompt with the same greedy ids as
    the engine's fp16 file of the same weights (F16 holds the Q4_1 values exactly enough)."""
    import numpy as np

    from mlfs_edge.assets import smollm2_path
    from mlfs_edge.eval.backends import DecoderSource, llama_cpp
    from mlfs_edge.eval.bench_generate import prompt_ids
    from mlfs_edge.runtime import Engine, pack

    prompt = prompt_ids(smollm2_path(), 32)
    art = llama_cpp.build_decoder(DecoderSource(smollm2_path(), True), ("f16",), tmp_path)["f16"]
    gen = llama_cpp.load_decoder({**art, "n_ctx": 64}, "f16", 1)
    timing = gen.generate(prompt, 8, 1)
    assert timing.tokens == 8 and timing.prefill_s > 0 and timing.decode_s > 0 and gen.size_bytes > 2e8
    with pytest.raises(ValueError, match="full model only"):
        gen.generate(prompt, 2, 1, subnet={"layers": [0]})
    with pytest.raises(ValueError, match="exceed the context"):
        gen.generate(prompt, 64, 1)

    import llama_cpp as lc

    with llama_cpp._quiet_fds():
        llm = lc.Llama(model_path=art["path"], n_ctx=64, n_threads=1, verbose=False)
    llm.eval(prompt)
    ids = []
    for _ in range(8):
        ids.append(int(np.ctypeslib.as_array(lc.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).argmax()))
        llm.eval([ids[-1]])
    engine = Engine.load(pack(smollm2_path(), tmp_path / "smollm2-fp16.mlfs", dtype="fp16"))
    assert engine.generate(prompt, max_new_tokens=8, stop_tokens=[]) == ids
