"""Fakes shipped for users and for stretto's own tests: real git repos, real processes.

* :func:`stretto.testing.repo.make_repo` builds a throwaway git repository from a dict of files.
"""
