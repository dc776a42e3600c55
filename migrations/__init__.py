"""factmatch's schema migrations: numbered SQL files, applied in order, each once.

A package so that the SQL ships inside the installed distribution (the image installs
factmatch normally, not from a source tree); ``worker.storage.db`` reads them from here.
"""
