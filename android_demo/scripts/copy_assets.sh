#!/usr/bin/env bash
# Copy the Python side's outputs into the app's assets (android_demo/app/src/main/assets):
#
#   scripts/copy_assets.sh MANIFEST.json INT8.mlfs FP16.mlfs [ASSETS_DIR]
#
#   MANIFEST.json  a manifest written by `mlfs-edge export` (beside it: its .pte and tokenizer/)
#   INT8.mlfs      `mlfs-edge pack MODEL INT8.mlfs --dtype int8`
#   FP16.mlfs      `mlfs-edge pack MODEL FP16.mlfs --dtype fp16`
#
# Layout the app reads: pte/NAME.json + pte/NAME.pte + pte/tokenizer/vocab.txt, and
# mlfs/model-int8.mlfs, mlfs/model-fp16.mlfs, mlfs/vocab.txt. The .pte is checked against the
# manifest's size and sha256 and each .mlfs for its magic, so a stale or broken file is refused here
# rather than on the phone. Old model files in ASSETS_DIR are replaced.
set -euo pipefail

usage() { echo "usage: $0 MANIFEST.json INT8.mlfs FP16.mlfs [ASSETS_DIR]" >&2; exit 2; }
[[ $# -eq 3 || $# -eq 4 ]] || usage
manifest=$1 int8=$2 fp16=$3
assets=${4:-$(cd "$(dirname "$0")/.." && pwd)/app/src/main/assets}

die() { echo "copy_assets: $*" >&2; exit 1; }
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

rm -rf "$assets/pte" "$assets/mlfs"
mkdir -p "$assets/pte/tokenizer" "$assets/mlfs"
cp "$manifest" "$assets/pte/"
cp "$src/$pte" "$assets/pte/$pte"
cp "$src/$vocab" "$assets/pte/$vocab"
cp "$int8" "$assets/mlfs/model-int8.mlfs"
cp "$fp16" "$assets/mlfs/model-fp16.mlfs"
cp "$src/$vocab" "$assets/mlfs/vocab.txt"
echo "copied into $assets:"
(cd "$assets" && find pte mlfs -type f | sort | sed 's/^/  /')
