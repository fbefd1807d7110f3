"""Padding fraction of training batches, padded vs packed, on the same shuffled micro-batches (LIMA by default).

    python bench/padding.py --train ../shared/data/lima/lima.json --layout lima --batch_size 8 --max_length 1024
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from rt_lightning.data.collate import PackCollator, PadCollator
from rt_lightning.data.datamodule import SFTDataModule
from rt_lightning.hub import EMBEDDED_GEMMA

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default=str(SHARED / "lima" / "lima.json"))
    parser.add_argument("--layout", default="lima")
    parser.add_argument("--mode", default="rt")
    parser.add_argument("--tokenizer", default=EMBEDDED_GEMMA)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_length", type=int, default=1024)
    args = parser.parse_args()
    if not Path(args.train).exists():
        print(f"skipped: {args.train} not found")
        return
    dm = SFTDataModule(train=args.train, val=None, layout=args.layout, mode=args.mode, tokenizer=args.tokenizer,
                       max_length=args.max_length, batch_size=args.batch_size)
    dataset = dm.dataset("train")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
    pad_id = dm.hf_tokenizer.pad_token_id
    figures = {}
    for name, collate in (("padded", PadCollator(pad_id)), ("packed", PackCollator(pad_id))):
        real = total = 0
        for start in range(0, len(order), args.batch_size):
            batch = collate([dataset[i] for i in order[start:start + args.batch_size]])
            total += batch["input_ids"].numel()
            real += sum(len(dataset[i]["input_ids"]) for i in order[start:start + args.batch_size])
        figures[name] = {"tokens": total, "real_tokens": real, "padding_fraction": round(1 - real / total, 4)}
        print(f"{name:7s} {total:9d} tokens in batches, {real} real, padding fraction {1 - real / total:.2%}")
    print(json.dumps({"bench": "padding", "data": args.train, "batch_size": args.batch_size,
                      "max_length": args.max_length, **figures}))


if __name__ == "__main__":
    main()
