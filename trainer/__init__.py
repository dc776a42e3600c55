"""The trainer: fine-tunes, evaluates, gates and registers model versions, and rolls them out.

It imports the serving core from ``worker`` (settings, encoder, storage, version lifecycle)
so that re-embedding the corpus under a new version uses exactly the worker's prompts and
normalisation. ``train.py`` is the fine-tune in numbered steps; ``job.py`` the whole run
(data, train, gate, register, promote or shadow); ``lora.py`` the adapters for large encoders;
``distributed.py`` what rank 0 owns under torchrun; ``plan.py`` the GPU memory plan;
``rerank.py`` the version's cross-encoder; ``plots.py`` the metrics plot.
"""
