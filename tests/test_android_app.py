"""The Android app as far as a machine without the Android SDK can check it: its Java sources compile
with javac against small committed stubs of exactly the Android, org.json and ExecuTorch API it uses
(android_demo/stubs/), against an R class generated from its own resources; its resources and manifest
are consistent; its Gradle build pins what the Python side uses; copy_assets.sh lays the models out as
the app reads them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "android_demo"
APP = DEMO / "app" / "src" / "main"
JAVA = APP / "java"
RES = APP / "res"
ANDROID_NS = "{http://schemas.android.com/apk/res/android}"
# Library packages an app on minSdk 24 can rely on (Java 8 level; javac --release 8 checks the members).
ALLOWED_JDK = ("java.io.", "java.lang.", "java.nio.charset.", "java.text.", "java.util.")


def _javac() -> str:
    javac = shutil.which("javac")
    if javac is None:
        if os.environ.get("MLFS_EDGE_REQUIRE_TOOLS"):  # set by `make test-android-app`: a missing JDK fails there
            pytest.fail("javac not found")
        pytest.skip("no JDK (javac) on this machine")
    return javac


def app_sources() -> list[Path]:
    return sorted(JAVA.rglob("*.java"))


def generate_r(out: Path) -> Path:
    """org.mlfsedge.demo.R as aapt2 would generate it (ids, layouts, strings), from res/."""
    ids: set[str] = set()
    for layout in (RES / "layout").glob("*.xml"):
        for el in ET.parse(layout).iter():
            value = el.get(f"{ANDROID_NS}id", "")
            if value.startswith("@+id/"):
                ids.add(value[5:])
    layouts = {p.stem for p in (RES / "layout").glob("*.xml")}
    strings = {el.get("name") for el in ET.parse(RES / "values" / "strings.xml").getroot().iter("string")}

    def block(kind: str, names: set[str], base: int) -> str:
        fields = "".join(f"    public static final int {n} = {base + i:#x};\n" for i, n in enumerate(sorted(names)))
        return f"  public static final class {kind} {{\n{fields}  }}\n"

    path = out / "org" / "mlfsedge" / "demo" / "R.java"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("package org.mlfsedge.demo;\n\npublic final class R {\n" + block("id", ids, 0x7F080000)
                    + block("layout", layouts, 0x7F0B0000) + block("string", strings, 0x7F100000) + "}\n")
    return path


def javac(out: Path, sources: list[Path], classpath: Path | None = None) -> subprocess.CompletedProcess:
    # --release 8: the Java 8 language and class library, roughly what minSdk 24 offers. -Werror with
    # every lint: deprecated or unchecked calls fail too.
    cmd = [_javac(), "--release", "8", "-Xlint:all", "-Xlint:-options", "-Werror", "-encoding", "UTF-8",
           "-d", str(out)]
    if classpath is not None:
        cmd += ["-cp", str(classpath)]
    return subprocess.run(cmd + [str(s) for s in sources], capture_output=True, text=True)


@pytest.fixture(scope="module")
def stubs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stubs")
    proc = javac(out, sorted((DEMO / "stubs").rglob("*.java")))
    assert proc.returncode == 0, proc.stderr
    return out


def test_app_sources_compile_against_the_stubs(stubs, tmp_path):
    r = generate_r(tmp_path / "gen")
    proc = javac(tmp_path / "classes", [*app_sources(), r], classpath=stubs)
    assert proc.returncode == 0, f"the app does not compile against the Android/ExecuTorch stubs:\n{proc.stderr}"
    assert (tmp_path / "classes/org/mlfsedge/demo/MainActivity.class").is_file()


@pytest.mark.parametrize("snippet", [
    "new android.widget.SeekBar(null);",  # an Android class outside the stubbed surface
    "org.pytorch.executorch.Module.load(\"m.pte\").forward(org.pytorch.executorch.Tensor.fromBlob("
    "new long[] {1}, new long[] {1}));",  # forward takes EValues, not Tensors
    "try { org.pytorch.executorch.Module.load(\"m.pte\"); } catch (java.io.IOException e) { }",  # Kotlin: unchecked
    "new org.json.JSONObject(\"{}\");",  # JSONException is checked on Android
])
def test_the_stubs_reject_what_the_real_api_rejects(stubs, tmp_path, snippet):
    src = tmp_path / "Probe.java"
    src.write_text(f"class Probe {{ void probe() {{ {snippet} }} }}\n")
    assert javac(tmp_path / "classes", [src], classpath=stubs).returncode != 0, snippet


def test_app_uses_only_jdk_packages_android_has():
    used = set()
    for src in app_sources():
        code = re.sub(r"//[^\n]*|/\*.*?\*/", "", src.read_text(), flags=re.S)  # comments may name anything
        used |= set(re.findall(r"\b(javax?\.[a-z]+(?:\.[a-z]+)*\.)[A-Z]", code))
    assert used and all(p.startswith(ALLOWED_JDK) for p in used), sorted(used)


def test_resources_and_manifest_are_consistent():
    strings = {el.get("name") for el in ET.parse(RES / "values" / "strings.xml").getroot().iter("string")}
    referenced = set()
    for xml in [APP / "AndroidManifest.xml", *RES.rglob("*.xml")]:
        for el in ET.parse(xml).iter():  # every file must parse
            for value in el.attrib.values():
                if value.startswith("@string/"):
                    referenced.add(value[8:])
    assert referenced and referenced <= strings, referenced - strings
    java_strings = {m for src in app_sources() for m in re.findall(r"\bR\.string\.(\w+)", src.read_text())}
    assert java_strings <= strings
    manifest = ET.parse(APP / "AndroidManifest.xml").getroot()
    activities = [a.get(f"{ANDROID_NS}name") for a in manifest.iter("activity")]
    assert activities == [".MainActivity"] and (JAVA / "org/mlfsedge/demo/MainActivity.java").is_file()
    assert not list(manifest.iter("uses-permission")), "the demo needs no permissions"


def test_gradle_build_pins_what_the_python_side_uses():
    app = (DEMO / "app" / "build.gradle.kts").read_text()
    executorch = version("executorch").split("+")[0]
    assert f'implementation("org.pytorch:executorch-android:{executorch}")' in app, \
        f"the app's ExecuTorch runtime must match the executorch=={executorch} that writes the .pte"
    assert int(re.search(r"minSdk = (\d+)", app).group(1)) >= 24
    assert 'abiFilters += listOf("arm64-v8a", "x86_64")' in app
    cmake = re.search(r'path = file\("([^"]+)"\)', app).group(1)
    assert (DEMO / "app" / cmake).is_file() and cmake == "src/main/cpp/CMakeLists.txt"
    assert 'namespace = "org.mlfsedge.demo"' in app
    assert 'include(":app")' in (DEMO / "settings.gradle.kts").read_text()
    assert "com.android.application" in (DEMO / "build.gradle.kts").read_text()
    wrapper = (DEMO / "gradle/wrapper/gradle-wrapper.properties").read_text()
    assert re.search(r"distributionUrl=https\\://services\.gradle\.org/distributions/gradle-8\.\d+(\.\d+)?-bin\.zip",
                     wrapper)


@pytest.fixture
def fake_outputs(tmp_path) -> tuple[Path, Path, Path]:
    import hashlib
    import json

    export = tmp_path / "export"
    (export / "tokenizer").mkdir(parents=True)
    program = b"PTE-PROGRAM-BYTES" * 10
    (export / "L4-H6-F768-int8.pte").write_bytes(program)
    (export / "tokenizer" / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nfilm\n")
    manifest = export / "L4-H6-F768-int8.json"
    manifest.write_text(json.dumps({"format": "mlfs-edge-pte", "pte": "L4-H6-F768-int8.pte",
                                    "sha256": hashlib.sha256(program).hexdigest(), "size_bytes": len(program),
                                    "tokenizer": {"vocab": "tokenizer/vocab.txt"}}))
    int8, fp16 = tmp_path / "a-int8.mlfs", tmp_path / "a-fp16.mlfs"
    int8.write_bytes(b"MLFSPACK" + b"\0" * 100)
    fp16.write_bytes(b"MLFSPACK" + b"\1" * 100)
    return manifest, int8, fp16


def copy_assets(*args: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(DEMO / "scripts/copy_assets.sh"), *map(str, args)], capture_output=True,
                          text=True)


def test_copy_assets_lays_out_what_the_app_reads(fake_outputs, tmp_path):
    manifest, int8, fp16 = fake_outputs
    assets = tmp_path / "assets"
    (assets / "pte").mkdir(parents=True)
    (assets / "pte" / "stale.json").write_text("{}")  # an old export must not linger
    proc = copy_assets(manifest, int8, fp16, assets)
    assert proc.returncode == 0, proc.stderr
    files = sorted(str(p.relative_to(assets)) for p in assets.rglob("*") if p.is_file())
    assert files == ["mlfs/model-fp16.mlfs", "mlfs/model-int8.mlfs", "mlfs/vocab.txt", "pte/L4-H6-F768-int8.json",
                     "pte/L4-H6-F768-int8.pte", "pte/tokenizer/vocab.txt"]
    assert (assets / "mlfs/model-int8.mlfs").read_bytes() == int8.read_bytes()
    # The app's asset names are the ones the script writes.
    main = (JAVA / "org/mlfsedge/demo/MainActivity.java").read_text()
    assert '"mlfs/model-" + dtype + ".mlfs"' in main and '"mlfs/vocab.txt"' in main and '"pte", ".json"' in main


def test_copy_assets_refuses_broken_inputs(fake_outputs, tmp_path):
    manifest, int8, fp16 = fake_outputs
    pte = manifest.with_suffix(".pte")
    pte.write_bytes(pte.read_bytes()[:-1] + b"X")
    proc = copy_assets(manifest, int8, fp16, tmp_path / "assets")
    assert proc.returncode != 0 and "sha256" in proc.stderr
    assert not (tmp_path / "assets").exists(), "nothing may be copied from a broken export"
    proc = copy_assets(manifest, int8, tmp_path / "missing.mlfs", tmp_path / "assets")
    assert proc.returncode != 0
    assert copy_assets(manifest).returncode == 2  # usage


def _fake_packed(path: Path, kind: int) -> Path:
    import struct

    header = bytearray(256)
    header[:8] = b"MLFSPACK"
    struct.pack_into("<I", header, 8, 2)  # format version
    struct.pack_into("<I", header, 104, kind)  # model kind: 0 encoder, 1 decoder (runtime.format.KIND_OFFSET)
    path.write_bytes(bytes(header) + b"\0" * 64)
    return path


def test_copy_assets_adds_the_decoder_and_its_tokenizer(fake_outputs, tmp_path):
    import json

    from mlfs_edge.runtime.format import KIND_CODES, KIND_OFFSET

    assert KIND_OFFSET == 104 and KIND_CODES["decoder"] == 1  # what the script's header check reads
    manifest, int8, fp16 = fake_outputs
    dec_int8 = _fake_packed(tmp_path / "lm-int8.mlfs", 1)
    dec_fp16 = _fake_packed(tmp_path / "lm-fp16.mlfs", 1)
    (tmp_path / "lm-int8.tokenizer").mkdir()
    tok = tmp_path / "lm-int8.tokenizer" / "tokenizer.json"  # where `mlfs-edge pack` saves it
    tok.write_text(json.dumps({"model": {"type": "BPE"}, "pre_tokenizer": {"type": "ByteLevel"}}))
    assets = tmp_path / "assets"
    proc = copy_assets(Path("--decoder"), dec_int8, dec_fp16, manifest, int8, fp16, assets)
    assert proc.returncode == 0, proc.stderr
    files = sorted(str(p.relative_to(assets)) for p in assets.rglob("*") if p.is_file())
    assert {"mlfs/decoder-int8.mlfs", "mlfs/decoder-fp16.mlfs", "mlfs/tokenizer.json",
            "mlfs/model-int8.mlfs"} <= set(files)
    assert (assets / "mlfs/tokenizer.json").read_bytes() == tok.read_bytes()
    main = (JAVA / "org/mlfsedge/demo/MainActivity.java").read_text()
    assert '"mlfs/decoder-" + dtype + ".mlfs"' in main and '"mlfs/tokenizer.json"' in main
    # Refused: an encoder given as the decoder, a missing or non-BPE tokenizer, --tokenizer alone.
    enc = _fake_packed(tmp_path / "enc.mlfs", 0)
    proc = copy_assets(Path("--decoder"), enc, dec_fp16, manifest, int8, fp16, tmp_path / "a1")
    assert proc.returncode != 0 and "is an encoder" in proc.stderr and not (tmp_path / "a1").exists()
    proc = copy_assets(Path("--decoder"), dec_fp16, dec_fp16, manifest, int8, fp16, tmp_path / "a2")
    assert proc.returncode != 0 and "no tokenizer" in proc.stderr
    wordpiece = tmp_path / "wp.json"
    wordpiece.write_text(json.dumps({"model": {"type": "WordPiece"}}))
    proc = copy_assets(Path("--decoder"), dec_int8, dec_fp16, Path("--tokenizer"), wordpiece, manifest, int8, fp16,
                       tmp_path / "a3")
    assert proc.returncode != 0 and "not a byte-level BPE" in proc.stderr
    assert copy_assets(Path("--tokenizer"), tok, manifest, int8, fp16).returncode != 0
    assert copy_assets(Path("--decoder"), dec_int8).returncode == 2  # usage
