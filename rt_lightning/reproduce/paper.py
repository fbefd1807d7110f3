"""Reference figures from An, Kim & Kim, *Revealing the Inherent Instructability of Pre-Trained Language Models*
(arXiv 2410.02465 v3), Table 15: average refusal rate over AdvBench, HarmBench, MaliciousInstruct and XSTest-unsafe,
and XSTest-safe false-refusal rate, for N = 0/100/200/500 refusal examples mixed into 1,000 LIMA examples.
Numbers only (judged there by Llama-3.1-70B-Instruct; ours by a model-free classifier, so compare trends, not levels)."""

PAPER_COUNTS = [0, 100, 200, 500]
TABLE_15_LIMA = {
    "Gemma-2-9B": {"it": {"rr_avg": [0.41, 0.71, 0.74, 0.80], "frr": [0.14, 0.16, 0.13, 0.16]},
                   "rt": {"rr_avg": [0.24, 0.47, 0.40, 0.72], "frr": [0.14, 0.13, 0.17, 0.20]}},
    "Gemma-2-2B": {"it": {"rr_avg": [0.30, 0.55, 0.64, 0.69], "frr": [0.09, 0.11, 0.10, 0.14]},
                   "rt": {"rr_avg": [0.24, 0.29, 0.26, 0.35], "frr": [0.07, 0.11, 0.10, 0.18]}},
}
SOURCE = "An, Kim & Kim (arXiv 2410.02465 v3), Table 15, LIMA rows"
