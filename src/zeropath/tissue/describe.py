"""Optional: richer class prompts written by a language model (any OpenAI-compatible endpoint).

ZEUS-style prompt sets profit from several visual descriptions per class ("sheets of
atypical cells with large pleomorphic nuclei…"). :func:`generate_descriptions` asks a chat
endpoint (``POST {url}/chat/completions``, the OpenAI wire format that vLLM, llama.cpp,
Ollama and hosted services speak) for ``n`` short descriptions per class and caches the
answers in a YAML file keyed by model and class, so a prompt set is generated once and then
reproducible offline. Only the standard library (urllib) is used. :func:`with_descriptions`
adds them to a :class:`~zeropath.tissue.prompts.PromptSet`, where they are embedded verbatim
next to the templated names.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import Any

from zeropath.errors import ConfigError, ModelError
from zeropath.tissue.prompts import PromptSet

__all__ = ["DescriptionError", "generate_descriptions", "with_descriptions"]

_SYSTEM = (
    "You are a pathologist. You write short, purely visual descriptions of tissue as it looks "
    "in H&E-stained histopathology images, one sentence each, without diagnoses of patients."
)
_USER = (
    "Write {n} different one-sentence visual descriptions of {name} ({synonyms}) as seen in "
    "an H&E-stained whole-slide image. Answer with a JSON array of {n} strings and nothing else."
)


class DescriptionError(ModelError):
    """The language-model endpoint failed or answered something unusable."""


def _endpoint(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


def _parse_answer(content: str, n: int) -> list[str]:
    """A JSON array of strings, or failing that one description per non-empty line."""
    text = content.strip()
    fence = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.S)
    if fence:
        text = fence.group(1)
    items: list[str] = []
    try:
        parsed = json.loads(text)
        if isinstance(parsed, list):
            items = [str(v) for v in parsed]
    except json.JSONDecodeError:
        items = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line) for line in text.splitlines()]
    items = [" ".join(i.split()).strip().strip('"') for i in items]
    return [i for i in items if i][:n]


def _ask(
    url: str, model: str, messages: list[dict[str, str]], api_key: str | None, timeout: float
) -> str:
    import urllib.error
    import urllib.request

    body = json.dumps({"model": model, "messages": messages, "temperature": 0}).encode("utf-8")
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(_endpoint(url), data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise DescriptionError(f"{_endpoint(url)}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DescriptionError(f"{_endpoint(url)}: cannot reach the endpoint ({reason})") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DescriptionError(f"{_endpoint(url)}: the answer is not JSON") from None
    try:
        return str(payload["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError):
        raise DescriptionError(f"{_endpoint(url)}: no choices[0].message.content") from None


def _load_cache(path: Path | None) -> dict[str, dict[str, list[str]]]:
    import yaml

    if path is None or not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: unreadable description cache: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: description cache must be a mapping model → class → list")
    return {str(m): {str(c): list(v) for c, v in (d or {}).items()} for m, d in data.items()}


def _save_cache(path: Path, data: Mapping[str, Any]) -> None:
    import yaml

    from zeropath.io.writers import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(yaml.safe_dump(dict(data), sort_keys=True, allow_unicode=True), "utf-8")


def generate_descriptions(
    classes: Mapping[str, Sequence[str]],
    url: str,
    model: str,
    api_key_env: str | None = "OPENAI_API_KEY",
    n: int = 5,
    cache: str | PathLike[str] | None = None,
    timeout: float = 60.0,
) -> dict[str, list[str]]:
    """``{class name: [n descriptions]}`` from an OpenAI-compatible chat endpoint.

    ``classes`` maps each class name to its synonyms. The API key is read from the environment
    variable ``api_key_env`` when it is set (local servers need none). With ``cache`` (a YAML
    file ``{model: {class: [...]}}``), classes already answered by ``model`` are not asked again
    and new answers are added to the file atomically.
    """
    cache_path = Path(cache).expanduser() if cache is not None else None
    store = _load_cache(cache_path)
    known = store.setdefault(model, {})
    api_key = os.environ.get(api_key_env) if api_key_env else None
    out: dict[str, list[str]] = {}
    changed = False
    for name, synonyms in classes.items():
        cached = known.get(name)
        if cached and len(cached) >= n:
            out[name] = [str(s) for s in cached[:n]]
            continue
        prompt = _USER.format(n=n, name=name, synonyms=", ".join(synonyms) or name)
        messages = [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": prompt}]
        answer = _parse_answer(_ask(url, model, messages, api_key, timeout), n)
        if not answer:
            raise DescriptionError(f"{_endpoint(url)}: no descriptions for class {name!r}")
        out[name] = known[name] = answer
        changed = True
    if cache_path is not None and changed:
        _save_cache(cache_path, store)
    return out


def with_descriptions(prompts: PromptSet, descriptions: Mapping[str, Sequence[str]]) -> PromptSet:
    """A copy of ``prompts`` whose classes also carry ``descriptions[class name]``."""
    classes = tuple(
        replace(
            c, descriptions=tuple(dict.fromkeys([*c.descriptions, *descriptions.get(c.name, ())]))
        )
        for c in prompts.classes
    )
    return replace(prompts, classes=classes)
