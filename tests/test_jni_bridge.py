"""The Android app's JNI bridge (MlfsEngine.java + app/src/main/cpp/mlfs_jni.cpp), built for this host
against the JDK's jni.h and driven on the host JVM: the real MiniLM packed int8 and fp16, sentences
tokenized by the app's Java tokenizer, two sub-networks, compared with the Python engine; and every
kind of bad argument must come back as a Java exception, never a crash."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlfs_edge.assets import minilm_path
from mlfs_edge.config import ArchSpec, SearchSpace, SubnetConfig
from mlfs_edge.data import load_classification
from mlfs_edge.runtime import Engine

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
APP_JAVA = ROOT / "android_demo/app/src/main/java/org/mlfsedge/demo"
SOURCES = [APP_JAVA / "WordPieceTokenizer.java", APP_JAVA / "engine/MlfsEngine.java",
           ROOT / "android_demo/hosttest/java/MlfsEngineHostTest.java", APP_JAVA / "ByteLevelBpeTokenizer.java",
           ROOT / "android_demo/hosttest/java/BpeTokenizerHostTest.java"]
BUILD = ROOT / "build" / "native"  # shared with `make test-native`: the engine library is built once
MAX_LENGTH = 64
# Two sub-networks: a uniform one (engine.uniform picks the layers natively) and a per-layer one.
SUBNETS = {"u:4,6,768": SubnetConfig((0, 2, 3, 5), (6,) * 4, (768,) * 4),
           "e:0,2,3,5/12,6,9,3/1536,512,1024,384": SubnetConfig((0, 2, 3, 5), (12, 6, 9, 3), (1536, 512, 1024, 384))}


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("MLFS_EDGE_REQUIRE_TOOLS"):  # set by `make test-jni`: there a missing JDK is a failure
            pytest.fail(f"{tool} not found")
        pytest.skip(f"no {tool} on this machine")
    return path


@pytest.fixture(scope="module")
def jni(tmp_path_factory) -> tuple[Path, Path]:
    """(folder of libmlfs_jni.so, folder of the compiled classes)."""
    _require("javac")
    _require("java")
    jobs = os.environ.get("JOBS", str(min(4, os.cpu_count() or 1)))
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(BUILD), "-DMLFS_BUILD_TESTS=ON", "-DMLFS_BUILD_PYTHON=OFF",
                    "-DCMAKE_BUILD_TYPE=Release", "-DMLFS_BUILD_JNI=ON"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(BUILD), "--target", "mlfs_jni", "-j", jobs], check=True,
                   stdout=subprocess.DEVNULL)
    classes = tmp_path_factory.mktemp("jni_classes")
    subprocess.run(["javac", "-Xlint:all", "-Werror", "-d", str(classes), *map(str, SOURCES)], check=True)
    return BUILD / "jni", classes


def java(jni: tuple[Path, Path], *args: str, env: dict[str, str] | None = None) -> list[str]:
    lib, classes = jni
    # -Xcheck:jni makes the JVM verify every JNI call the bridge makes (and abort on misuse).
    proc = subprocess.run(["java", "-Xcheck:jni", f"-Djava.library.path={lib}", "-cp", str(classes),
                           "MlfsEngineHostTest", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"the JVM failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    lines = proc.stdout.splitlines()
    assert lines and lines[-1] == "DONE", proc.stdout[-3000:]
    return lines


@pytest.fixture(scope="module")
def sentences(tmp_path_factory) -> tuple[list[str], Path]:
    texts = [t.replace("\n", " ") for t in load_classification("rotten_tomatoes").test.texts[:8]]
    path = tmp_path_factory.mktemp("sentences") / "sentences.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return texts, path


@pytest.mark.parametrize("dtype", ["int8", "fp16"])
def test_java_engine_matches_the_python_engine_on_real_minilm(jni, packed_minilm, sentences, dtype):
    from transformers import AutoTokenizer

    texts, path = sentences
    lines = java(jni, "run", str(packed_minilm[dtype]), str(minilm_path() / "vocab.txt"), str(path), str(MAX_LENGTH),
                 *SUBNETS)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    enc = tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="np")
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    java_ids = [[int(v) for v in line.split()[2:]] for line in lines if line.startswith("IDS ")]
    assert java_ids == [row[m == 1].tolist() for row, m in zip(ids, mask, strict=True)]

    engine = Engine.load(packed_minilm[dtype])
    outputs = {}
    for arg_index, (spec, cfg) in enumerate(SUBNETS.items(), start=5):
        [subnet_line] = [line.split() for line in lines if line.startswith(f"SUBNET {arg_index} ")]
        assert subnet_line[2] == cfg.name, spec
        assert subnet_line[3] == "[" + ",".join(map(str, cfg.layers)) + "]"
        [batch] = [line.split() for line in lines if line.startswith(f"BATCH {arg_index} ")]
        rows, cols = int(batch[2]), int(batch[3])
        got = np.array(batch[4:], np.float32).reshape(rows, cols)
        want = engine.run(ids, mask, subnet=cfg)
        assert got.shape == want.shape == (len(texts), 384)
        assert np.abs(got - want).max() <= 1e-5, f"{cfg.name}: padded batch differs from Python"
        for r in range(rows):
            [single] = [line.split()[3:] for line in lines if line.startswith(f"SINGLE {arg_index} {r} ")]
            row_ids = ids[r : r + 1, : mask[r].sum()]
            want_r = engine.run(np.ascontiguousarray(row_ids), np.ones_like(row_ids), subnet=cfg)[0]
            assert np.abs(np.array(single, np.float32) - want_r).max() <= 1e-5, f"{cfg.name} sentence {r}"
        outputs[cfg.name] = got
    a, b = outputs.values()
    assert np.abs(a - b).max() > 1e-2, "two different sub-networks gave the same output: the subnet was ignored"


def test_java_engine_reports_the_file_and_the_native_palette(jni, packed_minilm):
    lines = java(jni, "info", str(packed_minilm["int8"]))
    fields = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines if " " in line}
    engine = Engine.load(packed_minilm["int8"])
    arch: ArchSpec = engine.arch
    assert fields["DTYPE"] == "int8"
    assert int(fields["SIZE"]) == engine.file_size == packed_minilm["int8"].stat().st_size
    assert fields["DIMS"] == "6 384 12 1536 30522 512 0 384"
    full = SubnetConfig.full(arch)
    assert fields["FULL"] == f"{full.name} {full.layer_params(arch)}"
    # The native default palette is Python's SearchSpace.default, in the same (smallest-first) order.
    want = [f"{c.name} [{','.join(map(str, c.layers))}] {c.layer_params(arch)}"
            for c in SearchSpace.default(arch).uniform_configs()]
    assert [line.split(" ", 1)[1] for line in lines if line.startswith("CANDIDATE ")] == want
    assert '"arch"' in fields["METADATA"] and engine.metadata["arch"]["hidden"] == 384


def test_java_budget_picker_profiles_and_picks_like_python(jni, packed_minilm):
    from mlfs_edge import _core

    lines = java(jni, "budget", str(packed_minilm["int8"]))
    fields = {line.split(" ", 1)[0]: line.split(" ", 1)[1].split() for line in lines if " " in line}
    small, mid, full = map(float, fields["PROFILE"])
    assert 0 < small < full and 0 < mid < full
    assert fields["PICK_ROOMY"] == ["2", "L6-H12-F1536", "3"]
    assert fields["PICK_TIGHT"] == ["-1", "true"]
    # The same table through Python's Engine.pick (which calls the native rule) and the Java wrapper.
    assert fields["RULE"] == ["1", "2", "-1"]
    assert _core.pick_under_budget([0.70, 0.80, 0.85], [1.0, 2.0, 4.0], 3.0) == 1
    assert fields["THREADS"] == ["2", "384"]


def test_bad_arguments_raise_java_exceptions_not_crashes(jni, packed_minilm, tmp_path):
    good = packed_minilm["int8"]
    data = good.read_bytes()
    truncated, corrupt = tmp_path / "truncated.mlfs", tmp_path / "corrupt.mlfs"
    truncated.write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # inside the tensor data: only the checksum can notice
    corrupt.write_bytes(bytes(flipped))
    lines = java(jni, "errors", str(good), str(truncated), str(corrupt), str(minilm_path() / "vocab.txt"))
    results = [line for line in lines if line.startswith(("OK ", "FAIL "))]
    failed = [line for line in results if line.startswith("FAIL ")]
    assert not failed, "\n".join(failed)
    assert len(results) == 48 and "FAILURES 0" in lines and "STILL_WORKS 384" in lines
    messages = "\n".join(results)
    for expected in ("truncated", "checksum mismatch", "wrong magic", "attends to no token", "outside the vocabulary",
                     "exceeds the model's 512 positions", "this MlfsEngine is closed"):
        assert expected in messages, expected


def test_a_native_configuration_error_is_a_java_exception(jni, packed_minilm):
    # The kernel table is chosen on first use; a bad MLFS_ISA makes that throw inside the engine's constructor.
    lines = java(jni, "open", str(packed_minilm["int8"]), env={"MLFS_ISA": "no-such-isa"})
    assert any(line.startswith("THROWN java.lang.IllegalArgumentException: MLFS_ISA=no-such-isa") for line in lines)


def test_the_bridge_library_exports_only_its_entry_points(jni):
    if sys.platform != "linux":
        pytest.skip("checks an ELF library with GNU nm")
    lib = jni[0] / "libmlfs_jni.so"
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm")
    out = subprocess.run([nm, "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True).stdout
    symbols = [line.split()[-1] for line in out.splitlines() if line.split()[1:2] == ["T"]]
    assert symbols and all(s.startswith("Java_org_mlfsedge_demo_engine_MlfsEngine_") for s in symbols), symbols


def test_native_declarations_match_the_java_class(tmp_path):
    """javac -h writes the C prototypes the JVM will look up; mlfs_jni.cpp must define each one with
    exactly that signature (compiled against the generated header, a mismatch is a C++ error)."""
    javac = Path(os.path.realpath(_require("javac")))
    cxx = shutil.which("g++") or shutil.which("clang++") or pytest.skip("no C++ compiler")
    subprocess.run([str(javac), "-h", str(tmp_path), "-d", str(tmp_path / "classes"), str(SOURCES[1])], check=True)
    header = tmp_path / "org_mlfsedge_demo_engine_MlfsEngine.h"
    declared = set(re.findall(r"JNICALL (Java_\w+)", header.read_text()))
    jni_cpp = ROOT / "android_demo/app/src/main/cpp/mlfs_jni.cpp"
    defined = {f"Java_org_mlfsedge_demo_engine_MlfsEngine_{n}"
               for n in re.findall(r"^MLFS_JNI\(\w+, (\w+)\)", jni_cpp.read_text(), re.M)}
    assert declared and declared == defined
    include = javac.parent.parent / "include"
    proc = subprocess.run([cxx, "-std=c++17", "-fsyntax-only", "-include", str(header), f"-I{include}",
                           f"-I{include / 'linux'}", f"-I{ROOT / 'csrc/include'}", str(jni_cpp)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- generate: a tiny random Llama decoder (conftest.packed_tiny_decoder) -------------------------
GEN_PROMPT = [5, 17, 42, 99, 3, 150, 8, 64]
# Java case "SUBNET;max;temperature;topK;topP;penalty;seed;stops;fp16Cache;threads" → the Python call.
GEN_CASES = {
    "full;12;0;0;1;1;0;;false;1": ("full", {}),
    "u:2,2,48;12;0;0;1;1;0;;false;2": ("depth=2,heads=2,mlp=48", {}),
    "e:0,1,2/4,2,4/96,32,48;12;0;0;1;1.3;0;;true;1": (SubnetConfig((0, 1, 2), (4, 2, 4), (96, 32, 48)),
                                                      {"repetition_penalty": 1.3, "cache_dtype": "fp16"}),
    "full;12;0.9;20;0.9;1;7;;false;1": ("full", {"temperature": 0.9, "top_k": 20, "top_p": 0.9, "seed": 7}),
    "full;12;1.5;0;0.95;1;123456789;;false;1": ("full", {"temperature": 1.5, "top_p": 0.95, "seed": 123456789}),
    # self-speculative decoding (greedy: the same ids as without a draft): a depth prefix, a narrower draft
    "full;12;0;0;1;1;0;;false;1;e:0/4/96;3": ("full", {"draft": SubnetConfig((0,), (4,), (96,))}),
    "full;12;0;0;1;1;0;;false;2;e:0,1/2,2/32,32;2": ("full", {"draft": SubnetConfig((0, 1), (2, 2), (32, 32))}),
}


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_java_generate_matches_the_python_engine(jni, packed_tiny_decoder, dtype):
    engine = Engine.load(packed_tiny_decoder[dtype])
    lines = java(jni, "generate", str(packed_tiny_decoder[dtype]), ",".join(map(str, GEN_PROMPT)), *GEN_CASES)
    assert lines[0] == "DECODER true 2 160"
    outputs = []
    for i, (case, (spec, kwargs)) in enumerate(GEN_CASES.items(), start=3):
        cfg = spec if isinstance(spec, SubnetConfig) else SubnetConfig.parse(spec, engine.arch)
        want = engine.generate(GEN_PROMPT, subnet=cfg, max_new_tokens=12, stop_tokens=[], **kwargs)
        fields = {line.split()[0]: line.split()[2:] for line in lines if line.split()[1:2] == [str(i)]}
        assert fields["SUBNET"] == [cfg.name], case
        assert [int(t) for t in fields["GEN"]] == want, case
        assert [int(t) for t in fields["STREAM"]] == want, f"{case}: the listener saw other tokens"
        if "PLAIN" in fields:
            assert [int(t) for t in fields["PLAIN"]] == want, case
        rounds, drafted, accepted = map(int, fields["DRAFT"])
        if "draft" in kwargs:
            assert want == engine.generate(GEN_PROMPT, subnet=cfg, max_new_tokens=12, stop_tokens=[])
            assert rounds >= 1 and drafted >= accepted, case
        else:
            assert rounds == drafted == accepted == 0, case
        prompt_tokens, prefill, decode = fields["RATES"]
        assert int(prompt_tokens) == len(GEN_PROMPT) and float(prefill) > 0 and float(decode) > 0
        outputs.append(want)
    assert "CUT 3 3" in lines  # the listener's false ended it after the third token
    # Seeded sampling differs from greedy (else equal ids could hide dropped sampling settings).
    assert outputs[4] != outputs[0] and outputs[3] != outputs[0]


def test_java_generate_bad_arguments_raise_java_exceptions(jni, packed_tiny_decoder, tiny_bert_dir, tmp_path):
    from mlfs_edge.runtime import pack

    encoder = pack(tiny_bert_dir, tmp_path / "tiny-bert.mlfs", dtype="fp32")
    lines = java(jni, "generrors", str(packed_tiny_decoder["int8"]), str(encoder))
    results = [line for line in lines if line.startswith(("OK ", "FAIL "))]
    failed = [line for line in results if line.startswith("FAIL ")]
    assert not failed, "\n".join(failed)
    assert len(results) == 21 and "FAILURES 0" in lines
    want = Engine.load(packed_tiny_decoder["int8"]).generate([1, 2, 3], max_new_tokens=4, stop_tokens=[])
    assert f"STILL_GENERATES {' '.join(map(str, want))}" in lines
    messages = "\n".join(results)
    for expected in ("generate() needs a decoder", "a decoder (causal LM) file", "outside the vocabulary",
                     "leaving no room to generate", "max_new_tokens must be at least 1", "exceeds the model's 48",
                     "key/value groups", "stop token 160 is outside", "temperature must be >= 0", "top_p must be in",
                     "top_k must not be negative", "listener refused token", "this MlfsEngine is closed"):
        assert expected in messages, expected


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["int8"])
def test_the_apps_generation_path_on_real_smollm2_and_news(jni, tmp_path, dtype):
    """What the app's generation panel does, on the host JVM: the bundled SmolLM2-135M packed int8, a
    news prompt encoded by the Java BPE tokenizer, 24 greedy tokens streamed through JNI on two
    sub-networks, decoded in Java — ids and text identical to tokenizers + Python's Engine.generate."""
    from tokenizers import Tokenizer

    from mlfs_edge.assets import smollm2_path
    from mlfs_edge.data import load_text
    from mlfs_edge.runtime import pack

    model = pack(smollm2_path(), tmp_path / f"smollm2-{dtype}.mlfs", dtype=dtype)
    engine = Engine.load(model)
    tokenizer_json = smollm2_path() / "tokenizer.json"
    ref = Tokenizer.from_file(str(tokenizer_json))
    prompt = load_text("news").test[3][:400]
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_bytes(prompt.encode("utf-8"))
    for spec in ("full", "u:20,6,1024"):
        lines = java(jni, "app", str(tokenizer_json), str(model), str(prompt_file), spec, "24")
        fields = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines if " " in line}
        prompt_ids = ref.encode(prompt).ids
        assert [int(t) for t in fields["PROMPT"].split()] == prompt_ids
        cfg = SubnetConfig.full(engine.arch) if spec == "full" else SubnetConfig.uniform(engine.arch, 20, 6, 1024)
        assert fields["SUBNET"] == cfg.name
        want = engine.generate(prompt_ids, subnet=cfg, max_new_tokens=24, stop_tokens=[])
        assert [int(t) for t in fields["GEN"].split()] == want, spec
        assert bytes.fromhex(fields["TEXT"]).decode("utf-8") == ref.decode(want), spec
        assert fields["SHOWN_IS_PREFIX"] == "true"
        prefill, decode = map(float, fields["RATES"].split())
        print(f"JNI {dtype} {cfg.name}: prefill {prefill:.0f} tok/s, decode {decode:.1f} tok/s "
              f"({len(prompt_ids)}-token prompt): {ref.decode(want)!r}")
        assert prefill > 0 and decode > 0
