"""The paper's experiment as one grid: arms trained with ``fit``, evaluated with ``eval``, reported with verdicts."""
