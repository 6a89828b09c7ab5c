"""Local model servers seen from here: does a declared one answer, does it hold its models, and
is one running on its default loopback port (for ``stretto init``).

Only the addresses the user declared (``[local.NAME] base_url``) or, for ``init``, the default
loopback ports are asked; never through a proxy, with a short timeout. Ollama is asked for its
model list at ``/api/tags``, an OpenAI-compatible server (llama.cpp's ``llama-server``, vLLM,
LM Studio) at ``/v1/models``. Nothing here changes anything.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from stretto.localmodels import LocalServer, server_of

#: Where ``stretto init`` looks, in order: (kind, name, base URL, what serves there).
DEFAULT_PROBES: tuple[tuple[str, str, str, str], ...] = (
    ("ollama", "ollama", "http://127.0.0.1:11434", "Ollama"),
    ("openai", "llamacpp", "http://127.0.0.1:8080/v1", "llama.cpp llama-server"),
    ("openai", "vllm", "http://127.0.0.1:8000/v1", "vLLM"),
    ("openai", "lmstudio", "http://127.0.0.1:1234/v1", "LM Studio"),
)
#: ``kind=URL`` pairs, comma-separated, that replace :data:`DEFAULT_PROBES` (loopback only).
PROBE_VAR = "STRETTO_LOCAL_PROBE"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@dataclass(frozen=True, slots=True)
class Probe:
    """What a server said: ``models`` it lists, or ``error`` when it did not answer well."""

    url: str
    models: tuple[str, ...] = ()
    error: str = ""

    @property
    def answered(self) -> bool:
        return not self.error


@dataclass(frozen=True, slots=True)
class Found:
    """A local server that answered on a default port (for ``stretto init``)."""

    name: str
    kind: str
    base_url: str
    what: str
    models: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "base_url": self.base_url,
            "what": self.what,
            "models": list(self.models),
        }


def _get_json(url: str, timeout: float) -> Any:
    """GET ``url`` straight (no proxy: these are local addresses) and parse its JSON."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with opener.open(request, timeout=timeout) as response:
        return json.loads(response.read(4 * 1024 * 1024) or b"null")


def list_models(kind: str, base_url: str, *, timeout: float = 3.0) -> Probe:
    """The models a server lists: Ollama's ``/api/tags``, else ``/v1/models``."""
    server = LocalServer("probe", "ollama" if kind == "ollama" else "openai", base_url)
    url = f"{server.ollama_url}/api/tags" if kind == "ollama" else f"{server.openai_url}/models"
    try:
        data = _get_json(url, timeout)
    except urllib.error.HTTPError as error:
        return Probe(url, error=f"HTTP {error.code} from {url}")
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return Probe(url, error=f"no answer from {url} ({reason})")
    except ValueError:
        return Probe(url, error=f"{url} did not answer JSON")
    key, name = ("models", "name") if kind == "ollama" else ("data", "id")
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        return Probe(url, error=f"{url} answered without a {key!r} list")
    names = tuple(str(i[name]) for i in items if isinstance(i, dict) and name in i)
    return Probe(url, names)


def has_model(kind: str, wanted: str, listed: Sequence[str]) -> bool:
    """Whether ``wanted`` is among ``listed``; for Ollama a bare name means its ``:latest``."""
    if kind != "ollama":
        return wanted in listed
    tagged = {m if ":" in m else f"{m}:latest" for m in listed}
    return (wanted if ":" in wanted else f"{wanted}:latest") in tagged


def pull_hint(server: LocalServer, model: str) -> str:
    """How to get ``model`` onto ``server``."""
    if server.kind == "ollama":
        return f"ollama pull {model}"
    return (
        f"load {model} in the server (llama.cpp: llama-server -m FILE.gguf --alias {model}; "
        f"vLLM: vllm serve {model}; LM Studio: lms load {model}), or fix the name in stretto.toml"
    )


def agent_models(agents: Mapping[str, Mapping[str, Any]], server: LocalServer) -> dict[str, str]:
    """Model -> the first agent naming it (``model``, ``models`` tiers), among ``server``'s."""
    wanted: dict[str, str] = {}
    for name, table in agents.items():
        used = server_of(table)
        if used is None or used.name != server.name:
            continue
        tiers = table.get("models")
        names = [table.get("model"), *(tiers.values() if isinstance(tiers, Mapping) else ())]
        for model in names:
            if isinstance(model, str) and model:
                wanted.setdefault(model.split("/", 1)[-1] if "/" in model else model, name)
    return wanted


def server_findings(
    server: LocalServer, agents: Mapping[str, Mapping[str, Any]], *, timeout: float = 3.0
) -> list[tuple[str, str, str, str]]:
    """``(name, status, detail, fix)`` findings about one declared server, for doctor."""
    label = f"local {server.name}"
    probe = list_models(server.kind, server.base_url, timeout=timeout)
    if not probe.answered:
        start = "ollama serve" if server.kind == "ollama" else "start the server"
        if server.kind == "openai" and not server.base_url.endswith("/v1"):
            start += " (an OpenAI-compatible base_url usually ends in /v1)"
        return [
            (
                label,
                "fail",
                f"{server.kind} server at {server.base_url} does not answer: {probe.error}",
                f"{start}, or fix base_url under [local.{server.name}] in stretto.toml",
            )
        ]
    shown = ", ".join(probe.models[:6]) + (", ..." if len(probe.models) > 6 else "")
    findings = [
        (
            label,
            "ok",
            f"{server.kind} server at {server.base_url} answers; {len(probe.models)} model(s)"
            + (f": {shown}" if shown else "")
            + f"; max_parallel = {server.max_parallel}",
            "",
        )
    ]
    wanted = {model: f"[local.{server.name}] models" for model in server.models}
    for model, agent in agent_models(agents, server).items():
        wanted.setdefault(model, f"[agents.{agent}]")
    for model, where in wanted.items():
        if not has_model(server.kind, model, probe.models):
            findings.append(
                (
                    f"{label} model {model}",
                    "fail",
                    f"model {model!r} (named in {where}) is not on {server.base_url}",
                    pull_hint(server, model),
                )
            )
    return findings


def probes() -> list[tuple[str, str, str, str]]:
    """Where ``init`` looks: :data:`DEFAULT_PROBES`, or ``$STRETTO_LOCAL_PROBE`` (loopback)."""
    raw = os.environ.get(PROBE_VAR, "").strip()
    if not raw:
        return list(DEFAULT_PROBES)
    out = []
    for index, pair in enumerate(p.strip() for p in raw.split(",") if p.strip()):
        kind, _, url = pair.partition("=")
        host = urlsplit(url).hostname or ""
        if kind in ("ollama", "openai") and url.startswith("http://") and host in LOOPBACK:
            name = "ollama" if kind == "ollama" else "local"
            what = "Ollama" if kind == "ollama" else "An OpenAI-compatible server"
            out.append((kind, name if index == 0 else f"{name}{index + 1}", url, what))
    return out


def detect_local(*, timeout: float = 0.5) -> list[Found]:
    """The local model servers answering on their default loopback ports, with their models."""
    found = []
    for kind, name, url, what in probes():
        probe = list_models(kind, url, timeout=timeout)
        if probe.answered:
            found.append(Found(name, kind, url.rstrip("/"), what, probe.models))
    return found
