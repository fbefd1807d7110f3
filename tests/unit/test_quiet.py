"""rt_lightning.quiet hides library notices the user cannot act on, and nothing of ours."""

import logging
import warnings

from rt_lightning.quiet import quiet_library_notices


def test_library_deprecations_and_tips_are_hidden_ours_are_not(monkeypatch, caplog):
    monkeypatch.delenv("RT_LIGHTNING_VERBOSE", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_library_notices()
        warnings.warn_explicit("old API", FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
        warnings.warn_explicit("old API", DeprecationWarning, "x.py", 1, module="lightning.pytorch.utilities._pytree")
        warnings.warn_explicit("ours", FutureWarning, "module.py", 1, module="rt_lightning.model.module")
        warnings.warn("a user's own warning", UserWarning)
        warnings.warn("Precision bf16-mixed is not supported by the model summary.  Estimated model size in MB will "
                      "not be accurate. Using 32 bits instead.", UserWarning)
    assert [str(w.message) for w in caught] == ["ours", "a user's own warning"]
    caplog.set_level(logging.INFO)
    bitsandbytes = logging.getLogger("bitsandbytes.backends.cpu.ops")
    bitsandbytes.warning("Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").info("💡 Tip: try installing litlogger")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False"]
