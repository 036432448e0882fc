"""Ratio benchmarks of outlines-lmstudio against the SDK by hand and Outlines' own adapter.

Run them all with ``python -m benchmarks`` (``--quick`` for a short run). Every case
measures ours and its baseline in the same process, interleaved request by request
(or round by round), so machine noise hits both sides equally; the table gives
medians and their ratio, and ``benchmarks/results/latest.json`` keeps them.
"""
