"""Images a post or a fact-check carries: fetched under a network policy (:mod:`.fetch`), read
from untrusted bytes (:mod:`.decode`) and hashed with PDQ (:mod:`.pdq`).

This package composes below nothing: the pipeline sees images through a narrow protocol, and the
runtime hands it what is built here.
"""
