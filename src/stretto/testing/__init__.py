"""Fakes shipped for users and for stretto's own tests: real git repos, real processes.

* :func:`stretto.testing.repo.make_repo` builds a throwaway git repository from a dict of files.
* :class:`stretto.testing.fakemodel.FakeModelServer` speaks the OpenAI (Chat Completions and
  Responses), Anthropic and Gemini protocols on 127.0.0.1 from a script, to drive the real agent
  CLIs offline (``stretto fake-model serve --script FILE``; docs/fake-model.md).
"""
