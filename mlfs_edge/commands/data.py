"""mlfs-edge data: datasets and their split sizes."""

from __future__ import annotations

import argparse

from mlfs_edge.commands._common import add_data_args

ORDER = 20


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list datasets and their split sizes",
                       description="List the bundled datasets (or one file given with --data) with their "
                                   "seeded train/dev/test split sizes.")
    add_data_args(p, None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlfs_edge.data import BUILTIN_CLASSIFICATION, BUILTIN_TEXT, load_classification, load_text
    from mlfs_edge.report import markdown_table

    rows = []
    for name in [args.data] if args.data else list(BUILTIN_CLASSIFICATION):
        ds = load_classification(name, args.text_column, args.label_column)
        rows.append({"dataset": ds.name, "task": "classification", "labels": ", ".join(ds.label_names),
                     "train": len(ds.train), "dev": len(ds.dev), "test": len(ds.test)})
    if not args.data:
        for name in BUILTIN_TEXT:
            corpus = load_text(name)
            rows.append({"dataset": name, "task": "language modelling", "labels": "-",
                         "train": len(corpus.train), "dev": len(corpus.dev), "test": len(corpus.test)})
    print(markdown_table(rows))
    print("\nSplits are seeded (mlfs_edge.data.SPLIT_SEED): 80/10/10 of examples for classification, "
          "90/5/5 of documents for text.")
    return 0
