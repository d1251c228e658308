"""Classification accuracy of the engine in fp32 / fp16 / int8 vs PyTorch, on the Rotten Tomatoes test split.

Uses the fine-tuned teacher (runs/demo/teacher from `mlfs-edge demo`, or --teacher DIR); when there is
none, fine-tunes one first with mlfs_edge.train.finetune (--epochs, --max-train keep that short).

    .venv/bin/python benchmarks/engine_accuracy.py --json benchmarks/results/engine_accuracy.json

Target of the issue: fp16 and int8 within 0.5 point of fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from mlfs_edge.assets import minilm_path
from mlfs_edge.data import load_classification
from mlfs_edge.metrics import evaluate_classifier
from mlfs_edge.models import load_classifier
from mlfs_edge.report import markdown_table
from mlfs_edge.runtime import Engine, pack
from mlfs_edge.runtime.format import atomic_write_text
from mlfs_edge.train.finetune import FinetuneConfig, finetune_classifier


class EngineAsClassifier(torch.nn.Module):
    """Lets mlfs_edge.metrics evaluate the engine exactly as it evaluates a torch classifier."""

    def __init__(self, engine: Engine, threads: int) -> None:
        super().__init__()
        self.engine, self.threads = engine, threads

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        logits = self.engine.run(input_ids.numpy(), attention_mask.numpy(), threads=self.threads)
        return SimpleNamespace(logits=torch.from_numpy(logits))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="runs/demo/teacher", help="fine-tuned classifier folder")
    p.add_argument("--epochs", type=float, default=1.0, help="fine-tuning epochs when there is no teacher")
    p.add_argument("--max-train", type=int, default=None, help="fine-tune on the first N sentences only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()

    data = load_classification("rotten_tomatoes")
    teacher = Path(args.teacher)
    if not (teacher / "config.json").is_file():
        teacher = Path("runs/engine-accuracy/teacher")
        print(f"no teacher at {args.teacher}: fine-tuning all-MiniLM-L6-v2 into {teacher}")
        finetune_classifier(minilm_path(), data, teacher,
                            FinetuneConfig(epochs=args.epochs, max_train_examples=args.max_train))
    model, tokenizer = load_classifier(teacher, data.num_labels, data.label_names)
    rows = []
    t0 = time.perf_counter()
    torch_acc = evaluate_classifier(model.eval(), tokenizer, data.test).accuracy
    rows.append({"backend": "torch-fp32", "accuracy": 100 * torch_acc, "delta vs engine fp32": "",
                 "eval s": time.perf_counter() - t0})
    with tempfile.TemporaryDirectory() as tmp:
        accs = {}
        for dtype in ("fp32", "fp16", "int8"):
            engine = Engine.load(pack(model, Path(tmp) / f"teacher-{dtype}.mlfs", dtype=dtype))
            t0 = time.perf_counter()
            accs[dtype] = evaluate_classifier(EngineAsClassifier(engine, args.threads), tokenizer, data.test).accuracy
            rows.append({"backend": f"mlfs-{dtype}", "accuracy": 100 * accs[dtype],
                         "delta vs engine fp32": 100 * (accs[dtype] - accs.get("fp32", accs[dtype])),
                         "eval s": time.perf_counter() - t0, "file MiB": engine.file_size / 2**20})
    print(f"Rotten Tomatoes test split ({len(data.test)} sentences), teacher {teacher}")
    print(markdown_table(rows))
    if args.json:
        atomic_write_text(args.json, json.dumps({"teacher": str(teacher), "n_test": len(data.test), "rows": rows},
                                                indent=2))


if __name__ == "__main__":
    main()
