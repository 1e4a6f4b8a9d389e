"""Search over a trained supernet, in three layers:

- ``loop``: ``run_search`` (propose, score on every rank, cache, checkpoint; any strategy, any scorer);
- ``artifacts``: what a search writes and reads back (entries, best pick, result/history/pareto files,
  plots, ``report_search``);
- ``run``: ``search_supernet(config)``, the wiring of supernet, data, costs and strategy (the command).
"""

from spos_hw.nas.search.artifacts import SearchResult, describe_arch, history_entries, pick_best, report_search
from spos_hw.nas.search.loop import load_state, run_search
from spos_hw.nas.search.run import search_supernet

__all__ = [
    "SearchResult",
    "describe_arch",
    "history_entries",
    "load_state",
    "pick_best",
    "report_search",
    "run_search",
    "search_supernet",
]
