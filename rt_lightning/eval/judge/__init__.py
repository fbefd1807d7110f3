"""LLM judges over ``eval`` outputs: ``client`` (OpenAI-compatible server, retries, counters) with ``cache`` (replies
on disk), ``templates`` (prompt files) and ``parsing`` (verdicts out of replies), ``judges`` (refusal, pairwise,
aspects), ``stats`` (agreement, win rate, aspect means) and ``run`` (judge files resumably: the ``judge`` command)."""
