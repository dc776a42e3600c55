"""The trainer: fine-tunes, evaluates and rolls out model versions.

It imports the serving core from ``worker`` (settings, encoder, store, indexer) so that
re-embedding the corpus under a new version uses exactly the worker's prompts and
normalisation. The training job itself is tracked in its own issue and not built yet.
"""
