#!/usr/bin/env bash
# Copy the Python side's outputs into the app's assets (android_demo/app/src/main/assets):
#
#   scripts/copy_assets.sh [--decoder DEC_INT8.mlfs DEC_FP16.mlfs [--tokenizer tokenizer.json]] \
#       MANIFEST.json INT8.mlfs FP16.mlfs [ASSETS_DIR]
#
#   MANIFEST.json  a manifest written by `mlfs-edge export` (beside it: its .pte and tokenizer/)
#   INT8.mlfs      `mlfs-edge pack MODEL INT8.mlfs --dtype int8`
#   FP16.mlfs      `mlfs-edge pack MODEL FP16.mlfs --dtype fp16`
#   --decoder      optional, the generation panel's packed decoder (a causal LM, e.g.
#                  `mlfs-edge pack smollm2 DEC_INT8.mlfs --dtype int8`, same with fp16) and its byte-level
#                  BPE tokenizer.json (default: the one `pack` saved beside it, DEC_INT8.tokenizer/)
#
# Layout the app reads: pte/NAME.json + pte/NAME.pte + pte/tokenizer/vocab.txt, and
# mlfs/model-int8.mlfs, mlfs/model-fp16.mlfs, mlfs/vocab.txt; with --decoder also
# mlfs/decoder-int8.mlfs, mlfs/decoder-fp16.mlfs, mlfs/tokenizer.json. The .pte is checked against the
# manifest's size and sha256, each .mlfs for its magic (and a decoder for its model kind), so a stale
# or broken file is refused here rather than on the phone. Old model files in ASSETS_DIR are replaced.
set -euo pipefail

usage() {
  echo "usage: $0 [--decoder DEC_INT8.mlfs DEC_FP16.mlfs [--tokenizer tokenizer.json]] MANIFEST.json INT8.mlfs" \
       "FP16.mlfs [ASSETS_DIR]" >&2
  exit 2
}
die() { echo "copy_assets: $*" >&2; exit 1; }
dec_int8="" dec_fp16="" dec_tokenizer=""
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --decoder) [[ $# -ge 3 ]] || usage; dec_int8=$2 dec_fp16=$3; shift 3 ;;
    --tokenizer) [[ $# -ge 2 ]] || usage; dec_tokenizer=$2; shift 2 ;;
    *) usage ;;
  esac
done
[[ $# -eq 3 || $# -eq 4 ]] || usage
[[ -z $dec_tokenizer || -n $dec_int8 ]] || die "--tokenizer goes with --decoder"
manifest=$1 int8=$2 fp16=$3
assets=${4:-$(cd "$(dirname "$0")/.." && pwd)/app/src/main/assets}
[[ -f $manifest ]] || die "no manifest $manifest (write one with \`mlfs-edge export\`)"
# python3 reads the manifest and checks the .pte (portable: no GNU stat / sha256sum needed).
read -r pte vocab < <(python3 - "$manifest" <<'PY'
import hashlib, json, pathlib, sys
path = pathlib.Path(sys.argv[1])
m = json.loads(path.read_text())
if m.get("format") != "mlfs-edge-pte":
    sys.exit(f"{path} is not an mlfs-edge .pte manifest")
pte, vocab = path.parent / m["pte"], path.parent / m["tokenizer"]["vocab"]
if not pte.is_file():
    sys.exit(f"{pte} (named by the manifest) does not exist")
data = pte.read_bytes()
if len(data) != m["size_bytes"] or hashlib.sha256(data).hexdigest() != m["sha256"]:
    sys.exit(f"{pte} does not match the manifest's size / sha256: re-export it")
if not vocab.is_file():
    sys.exit(f"no vocabulary {vocab}")
print(m["pte"], m["tokenizer"]["vocab"])
PY
) || die "$manifest: see above"
src=$(dirname "$manifest")
for f in "$int8" "$fp16"; do
  [[ -f $f ]] || die "no packed model $f (write one with \`mlfs-edge pack\`)"
  [[ $(head -c 8 "$f") == MLFSPACK ]] || die "$f is not an .mlfs packed file"
done

if [[ -n $dec_int8 ]]; then
  dec_tokenizer=${dec_tokenizer:-${dec_int8%.mlfs}.tokenizer/tokenizer.json}
  # The model kind (header offset 104 of a version >= 2 file, 1 = decoder) and a byte-level BPE
  # tokenizer.json, the one kind the app's ByteLevelBpeTokenizer reads.
  python3 - "$dec_int8" "$dec_fp16" "$dec_tokenizer" <<'PY' || die "decoder: see above"
import json, pathlib, struct, sys
*models, tok = sys.argv[1:]
for m in models:
    p = pathlib.Path(m)
    if not p.is_file():
        sys.exit(f"no packed decoder {p} (write one with `mlfs-edge pack smollm2 {p.name} --dtype ...`)")
    head = p.read_bytes()[:256]
    if head[:8] != b"MLFSPACK":
        sys.exit(f"{p} is not an .mlfs packed file")
    if len(head) < 108 or struct.unpack_from("<I", head, 8)[0] < 2 or struct.unpack_from("<I", head, 104)[0] != 1:
        sys.exit(f"{p} is an encoder; the generation panel needs a packed causal LM")
t = pathlib.Path(tok)
if not t.is_file():
    sys.exit(f"no tokenizer {t} (give --tokenizer PATH/tokenizer.json)")
try:
    spec = json.loads(t.read_text(encoding="utf-8"))
    ok = spec["model"]["type"] == "BPE" and (spec.get("pre_tokenizer") or {}).get("type") == "ByteLevel"
except (ValueError, KeyError, TypeError):
    ok = False
if not ok:
    sys.exit(f"{t} is not a byte-level BPE tokenizer.json (model BPE, pre_tokenizer ByteLevel)")
PY
fi

rm -rf "$assets/pte" "$assets/mlfs"
mkdir -p "$assets/pte/tokenizer" "$assets/mlfs"
cp "$manifest" "$assets/pte/"
cp "$src/$pte" "$assets/pte/$pte"
cp "$src/$vocab" "$assets/pte/$vocab"
cp "$int8" "$assets/mlfs/model-int8.mlfs"
cp "$fp16" "$assets/mlfs/model-fp16.mlfs"
cp "$src/$vocab" "$assets/mlfs/vocab.txt"
if [[ -n $dec_int8 ]]; then
  cp "$dec_int8" "$assets/mlfs/decoder-int8.mlfs"
  cp "$dec_fp16" "$assets/mlfs/decoder-fp16.mlfs"
  cp "$dec_tokenizer" "$assets/mlfs/tokenizer.json"
fi
echo "copied into $assets:"
(cd "$assets" && find pte mlfs -type f | sort | sed 's/^/  /')
