"""``SFTDataModule``: one source, a rendering ``mode`` (``it`` | ``rt`` | ``rt_empty`` | any registered mode), an
optional refusal mixture, exact labels.

Flow: source → records (``records.py``) → seeded subset + refusal mixture (``mixtures.py``) → messages (``modes.py``)
→ text + trainable spans (``templates.py``) → input_ids + labels (``tokenize.py``), cached as an HF ``datasets``
folder keyed by everything that affects the tokens → ``PadCollator`` / ``PackCollator``.

To extend it in a notebook, subclass and override ``read_records`` (a new source), ``to_messages`` (a new mode),
or register a mode with ``rt_lightning.data.modes.register_mode``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import lightning as L

from rt_lightning.constants import ASSETS_DIR, IGNORE_INDEX
from rt_lightning.data.collate import PackCollator, PadCollator
from rt_lightning.data.global_batch import resolve_accumulation
from rt_lightning.data.mixtures import RefusalMixture, seeded_subset
from rt_lightning.data.modes import Message, get_mode
from rt_lightning.data.records import NORMALISERS, DataError, FieldLayout, Record, load_records
from rt_lightning.data.samplers import EvenShardSampler, ResumableLoader, WithFiller
from rt_lightning.data.templates import Template, build_template, resolve_template
from rt_lightning.data.tokenize import tokenize_batch, tokenizer_adds_bos, truncate_and_check
from rt_lightning.hub import cache_root, load_tokenizer, pad_token_id

log = logging.getLogger(__name__)
CACHE_VERSION = 3
"""Bump when tokenisation code changes meaning, so old caches are not reused."""
QUICKSTART_DIR = ASSETS_DIR / "quickstart"
NOT_IN_CACHE_KEY = frozenset({"batch_size", "global_batch_size", "packing", "shuffle", "num_workers", "cache_dir"})
"""Fields that cannot change the tokens; every other field is part of the cache key (a new field too, by default)."""
REMOVED_KEYS = {
    "refusal_mode": "data.mode (the mixture is rendered with the data's own mode)",
    "num_refusals": "data.refusals.count",
    "refusal_filter": "data.refusals.filter",
    "instruction_field": "data.layout: {class_path: rt_lightning.data.FieldLayout, init_args: {instruction: ...}}",
    "response_field": "data.layout: {class_path: rt_lightning.data.FieldLayout, init_args: {response: ...}}",
    "input_field": "data.layout: {class_path: rt_lightning.data.FieldLayout, init_args: {input: ...}}",
    "user_format": "data.template: {class_path: rt_lightning.data.TextTemplate, init_args: {user: ...}}",
    "assistant_format": "data.template: {class_path: rt_lightning.data.TextTemplate, init_args: {assistant: ...}}",
}
"""Keys of the flat, older data config and what replaced them (see ``SFTDataModule.__post_init__``)."""


@dataclass
class SFTDataModule(L.LightningDataModule):
    """Instruction-response (IT), response-only (RT) and refusal-augmented data from one source."""

    train: str = str(QUICKSTART_DIR / "train.jsonl")
    """Training data: a local json/jsonl/csv/parquet file or a hub dataset id (e.g. ``GAIR/lima``)."""
    val: Optional[str] = str(QUICKSTART_DIR / "val.jsonl")
    """Validation data (same forms as ``train``); null for none. It is rendered with the same mode."""
    layout: Union[str, FieldLayout] = "auto"
    """Row layout: auto, lima, alpaca, dolly, refusals, prompt_completion, or a ``FieldLayout`` class_path naming the
    instruction/response/input fields."""
    split: str = "train"
    """Split to read from hub datasets."""
    mode: str = "rt"
    """How a record is rendered: it (instruction + response), rt (response only, no user turn), rt_empty (empty user
    turn), or a mode added with ``register_mode``. Refusals (``refusals``) are rendered with it too."""
    max_examples: Optional[int] = None
    """Keep a seeded random subset of this many base examples (the paper's 1,000-example Alpaca/Dolly sets)."""
    refusals: Union[RefusalMixture, str, None] = None
    """Refusal augmentation (paper §5.1): ``source``, ``count``, ``filter``, ``seed``; null for none. (A bare string,
    the older form, stops with what to write instead.)"""
    seed: int = 0
    """Seed of the base-subset sampler (the paper uses 0) and of the per-epoch shuffle."""
    template: Union[str, Template] = "tulu"
    """tulu (the paper's), chat (the tokenizer's own chat template), a name added with ``register_template``, or a
    ``Template`` class_path with its init args (e.g. ``rt_lightning.data.TextTemplate`` with user/assistant formats)."""
    tokenizer: Optional[str] = None
    """Tokenizer name or path; linked to ``model.model`` by the CLI."""
    add_bos: Optional[bool] = None
    """Prepend exactly one BOS; null = when the tokenizer does so by default."""
    max_length: int = 2048
    """Truncate longer examples (keeping the head)."""
    on_bad_row: str = "error"
    """error: stop at a bad row naming file and row; skip: drop it and log the count."""
    batch_size: int = 8
    """Micro-batch size per device (examples per forward, packed or not)."""
    global_batch_size: Optional[int] = None
    """Examples per optimizer step over all devices (paper: 64); gradient accumulation is derived from it and the
    device count at start-up. Null: ``trainer.accumulate_grad_batches`` as given."""
    packing: bool = True
    """Lay each micro-batch's examples end to end in one row, without padding and without cross-example attention
    (exact: the model checks once that packed and separate sequences agree). False pads each example instead."""
    shuffle: bool = True
    """Shuffle training examples each epoch, in an order fixed by ``seed`` and the epoch (the same for any number of
    processes, and restored exactly on resume); false keeps file order."""
    num_workers: int = 0
    """DataLoader worker processes."""
    cache_dir: Optional[str] = None
    """Where tokenised datasets are cached; null = ``$RT_LIGHTNING_DATASET_CACHE`` or
    ``$RT_LIGHTNING_CACHE/datasets``."""

    # Removed keys, accepted only to stop with what replaced them (``REMOVED_KEYS``); null = not given.
    refusal_mode: InitVar[Optional[str]] = None
    """Removed: the mixture is rendered with ``mode``."""
    num_refusals: InitVar[Optional[int]] = None
    """Removed: use ``refusals.count``."""
    refusal_filter: InitVar[Optional[str]] = None
    """Removed: use ``refusals.filter``."""
    instruction_field: InitVar[Optional[str]] = None
    """Removed: use a ``FieldLayout`` layout."""
    response_field: InitVar[Optional[str]] = None
    """Removed: use a ``FieldLayout`` layout."""
    input_field: InitVar[Optional[str]] = None
    """Removed: use a ``FieldLayout`` layout."""
    user_format: InitVar[Optional[str]] = None
    """Removed: use a ``TextTemplate`` template."""
    assistant_format: InitVar[Optional[str]] = None
    """Removed: use a ``TextTemplate`` template."""

    _tokenizer: Any = field(default=None, init=False, repr=False)
    _datasets: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self, *removed: Optional[Any]) -> None:
        super().__init__()
        # The removed keys arrive positionally, in their declaration order, which is REMOVED_KEYS' order.
        given = [name for name, value in zip(REMOVED_KEYS, removed) if value is not None]
        if given:
            replaced = "; ".join(f"data.{name} → {REMOVED_KEYS[name]}" for name in given)
            raise ValueError(f"Removed data key(s): {replaced}")
        if self.mode == "refusal":
            raise ValueError("data.mode 'refusal' is gone: set data.mode to it/rt/rt_empty (how the mixture is "
                             "rendered, formerly data.refusal_mode) and data.refusals.source/count (formerly "
                             "data.refusals/data.num_refusals)")
        if isinstance(self.refusals, str):
            raise ValueError(f"data.refusals is now a group, not a path: set data.refusals.source to {self.refusals!r} "
                             "and data.refusals.count (formerly data.num_refusals)")
        if isinstance(self.refusals, dict):  # Python callers may pass the group as a plain dict
            self.refusals = RefusalMixture(**self.refusals)
        if isinstance(self.layout, str) and self.layout not in (*NORMALISERS, "auto"):
            raise ValueError(f"Unknown layout {self.layout!r}; choose one of {sorted(NORMALISERS) + ['auto']} or a "
                             "FieldLayout")
        get_mode(self.mode)  # fail at start-up, naming the mode
        resolve_template(self.template)  # the same for the template

    # --- pieces a subclass may override -------------------------------------------------------------------------
    def read_records(self, source: str) -> list[Record]:
        return load_records(source, layout=self.layout, split=self.split, on_bad_row=self.on_bad_row)

    def mix(self, records: list[Record]) -> list[Record]:
        """Seeded base subset, then the refusal mixture when ``refusals`` is set."""
        records = seeded_subset(records, self.max_examples, self.seed)
        if self.refusals is None:
            return records
        return self.refusals.mix(records, split=self.split, on_bad_row=self.on_bad_row)

    def to_messages(self, record: Record) -> list[Message]:
        return get_mode(self.mode)(record)

    # --- tokenizer and template ---------------------------------------------------------------------------------
    def connect(self, tokenizer) -> None:
        """Give the module a ready tokenizer object (tests, notebooks) instead of a name to load."""
        self._tokenizer = tokenizer

    @property
    def hf_tokenizer(self):
        if self._tokenizer is None:
            if self.tokenizer is None:
                raise ValueError("SFTDataModule needs a tokenizer: set data.tokenizer (the CLI links model.model) "
                                 "or call connect(tokenizer)")
            self._tokenizer = load_tokenizer(self.tokenizer)
        return self._tokenizer

    def build_template(self) -> Template:
        return build_template(self.template, self.hf_tokenizer)

    # --- datasets -----------------------------------------------------------------------------------------------
    def examples(self, split: str) -> tuple[list[Record], list[dict]]:
        """Records of ``split`` (train/val) and their tokenised examples, checked row by row."""
        source = self.train if split == "train" else self.val
        records = self.read_records(source)
        if split == "train":
            records = self.mix(records)
        template, tokenizer = self.build_template(), self.hf_tokenizer
        add_bos = tokenizer_adds_bos(tokenizer) if self.add_bos is None else self.add_bos
        rendered = [template.render(self.to_messages(r)) for r in records]
        kept_records, examples, skipped, split_count, special_count = [], [], 0, 0, 0
        for start in range(0, len(records), 1024):
            chunk = tokenize_batch(tokenizer, rendered[start:start + 1024], add_bos)
            for record, tokenized in zip(records[start:start + 1024], chunk):
                try:
                    tokenized = truncate_and_check(tokenized, self.max_length, record.where, tokenizer.bos_token_id)
                except DataError as err:
                    if self.on_bad_row == "error":
                        raise
                    skipped += 1
                    log.warning("Skipping example: %s", err)
                    continue
                split_count += tokenized.split_at_boundary
                special_count += tokenized.special_text_in_data
                kept_records.append(record)
                examples.append({"input_ids": tokenized.input_ids, "labels": tokenized.labels,
                                 "source": record.source, "row": record.row})
        if skipped:
            log.warning("%s: skipped %d example(s) with no trainable tokens", source, skipped)
        if special_count:
            log.warning("%s: %d example(s) hold special-token text (e.g. %r) in their data; it is trained as plain "
                        "text, not as the special token", source, special_count, tokenizer.eos_token)
        if split_count:
            log.info("%s: %d example(s) had a token across a span edge and were split there", source, split_count)
        log.info("%s split: %d examples (mode=%s, template=%s)", split, len(examples), self.mode, self.template)
        return kept_records, examples

    def source_files(self) -> dict[str, Optional[str]]:
        """The local files read (their size and mtime join the cache key); override when a subclass reads more."""
        return {"train": self.train, "val": self.val, "refusals": self.refusals.source if self.refusals else None}

    def _cache_key(self, split: str) -> str:
        tok = self.hf_tokenizer
        settings = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
                    if f.init and f.name not in NOT_IN_CACHE_KEY}
        settings["_build"] = {"split": split, "cls": f"{type(self).__module__}.{type(self).__qualname__}",
                              "version": CACHE_VERSION,
                              "tokenizer": [tok.name_or_path, type(tok).__name__, len(tok), tok.bos_token,
                                            tok.eos_token, tok.chat_template, tokenizer_fingerprint(tok)]}
        for name, source in self.source_files().items():  # local files: their content matters, not just the path
            path = Path(str(source))
            if source is not None and path.is_file():
                stat = path.stat()
                settings["_build"][f"{name}_stat"] = [stat.st_size, stat.st_mtime_ns]
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]

    def dataset(self, split: str):
        """The tokenised ``datasets.Dataset`` of ``split``, built once and then loaded from the cache."""
        if split in self._datasets:
            return self._datasets[split]
        import datasets  # deferred: a heavy import (pyarrow), needed only once data is built

        root = self.cache_dir or os.environ.get("RT_LIGHTNING_DATASET_CACHE") or cache_root() / "datasets"
        folder = Path(root) / f"{split}-{self._cache_key(split)}"
        if folder.is_dir():
            ds = datasets.load_from_disk(str(folder))
        else:
            _, examples = self.examples(split)
            ds = datasets.Dataset.from_list(examples)
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent)
            ds.save_to_disk(staging)
            shutil.rmtree(folder, ignore_errors=True)
            Path(staging).rename(folder)  # atomic: a killed run never leaves a half-written cache
            ds = datasets.load_from_disk(str(folder))
        self._datasets[split] = ds.with_format(columns=["input_ids", "labels"])
        return self._datasets[split]

    def prepare_data(self) -> None:
        # Rank 0 builds the caches; the other ranks load them in setup().
        for split in ("train", "val") if self.val else ("train",):
            self.dataset(split)

    def setup(self, stage: str) -> None:
        trainer = getattr(self, "trainer", None)
        if stage == "fit" and trainer is not None:
            resolve_accumulation(trainer, self.batch_size, self.global_batch_size)
        self.dataset("train")
        if self.val:
            self.dataset("val")

    def collator(self) -> PadCollator | PackCollator:
        pad_id = pad_token_id(self.hf_tokenizer)
        return PackCollator(pad_id) if self.packing else PadCollator(pad_id)

    def _loader(self, split: str, shuffle: bool) -> ResumableLoader:
        """One loader for one or many processes: the epoch's order comes from ``seed`` and the epoch alone, and a
        checkpoint written mid-epoch records how far the epoch got (``samplers.py``)."""
        dataset, collate = self.dataset(split), self.collator()
        trainer = getattr(self, "trainer", None)
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = EvenShardSampler(dataset, world_size, rank, shuffle=shuffle, seed=self.seed)
        return ResumableLoader(WithFiller(dataset, collate.pad_token_id), batch_size=self.batch_size, sampler=sampler,
                               collate_fn=collate, num_workers=self.num_workers)

    def train_dataloader(self) -> ResumableLoader:
        return self._loader("train", self.shuffle)

    def val_dataloader(self) -> ResumableLoader | list:
        return self._loader("val", False) if self.val else []

    # --- inspection ---------------------------------------------------------------------------------------------
    def inspect(self, split: str = "train", limit: Optional[int] = None) -> Iterator[dict]:
        """Yield what is trained, per example: the decoded input and the decoded tokens that carry loss."""
        records, examples = self.examples(split)
        tok = self.hf_tokenizer
        for index, (record, example) in enumerate(zip(records, examples)):
            if limit is not None and index >= limit:
                return
            trained = [t for t, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]
            yield {"index": index, "source": record.source, "row": record.row,
                   "refusal": bool(record.meta.get("refusal")), "num_tokens": len(example["input_ids"]),
                   "num_trainable": len(trained),
                   "text": tok.decode(example["input_ids"], skip_special_tokens=False,
                                      clean_up_tokenization_spaces=False),
                   "trainable_text": tok.decode(trained, skip_special_tokens=False,
                                                clean_up_tokenization_spaces=False)}


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that maps text to ids: the full serialised fast tokenizer (vocabulary, merges, added
    tokens, normaliser, pre-tokeniser), else the vocabulary with its ids. A vocabulary edited in place, with the same
    size and special tokens, gets a new fingerprint and so a new cache entry."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    """``value`` as JSON for the cache key: dataclasses and class_path objects (templates, layouts) in full."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    attributes = ({f.name: getattr(value, f.name) for f in dataclasses.fields(value)} if dataclasses.is_dataclass(value)
                  else {k: v for k, v in vars(value).items() if not k.startswith("_")})  # "_x": runtime state
    return {"class_path": f"{type(value).__module__}.{type(value).__qualname__}", "init_args": _jsonable(attributes)}
