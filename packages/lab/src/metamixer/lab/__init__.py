"""metamixer.lab: the experiment machinery around the library ``metamixer.core``.

The command line of every task, run folders, checkpoints written atomically, resumable loaders,
result records, sweeps and their reports, prediction writers, plots and analysis of trained
networks.  It imports Lightning; the library never imports it.
"""
