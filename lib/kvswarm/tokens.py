"""Token sizing: counting prompt text in tokens of the served model, and cutting text to size.

Three `TokenSizer`s, in the order `choose_sizer` prefers them:

- `ServerSizer`: the server's own `POST /tokenize`, in the request shape of its engine
  (each engine profile in `kvswarm.engines` holds its `TokenizeShape`). Exact, but an
  HTTP call, so it is only used for a handful of calls per text kind and per shared
  prefix, never per request.
- `HFSizer`: a local Hugging Face `tokenizers` tokenizer (a tokenizer.json file, a directory
  holding one, or a Hub repo id already in the local Hugging Face cache; never downloaded).
  Exact and cheap: every prompt is counted.
- `RatioSizer`: characters per token, calibrated from what the server reported as
  `usage.prompt_tokens` for known texts, or taken from the config.

`TextFitter` cuts deterministic text streams (kvswarm.workloads.text) to a target length in
tokens; `LengthStats` records achieved lengths against targets for run.json.
"""

from __future__ import annotations

import http.client
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import orjson

from kvswarm.errors import ConfigError, KvswarmError
from kvswarm.urls import server_root

if TYPE_CHECKING:
    import tokenizers

    from kvswarm.config import TokenizerConfig


@runtime_checkable
class TokenSizer(Protocol):
    """Counts text in tokens of the served model.

    `method` names the technique ("server", "hf", "ratio") for run.json; `local` says a
    call is cheap enough to make for every request (no network round trip).
    """

    method: str
    local: bool

    def count(self, text: str) -> int:
        """The number of tokens `text` encodes to, without special tokens (BOS/EOS)."""
        ...


class TokenizeError(KvswarmError):
    """The server's /tokenize endpoint could not be used."""


# --- the server's /tokenize ----------------------------------------------------------------


@dataclass(frozen=True)
class TokenizeShape:
    """The request and response shape of one engine's tokenize endpoint.

    The defaults are the common shape (`POST /tokenize {"prompt": ..., "model": ...}`,
    answered with `count` or a `tokens` list); engine profiles (`kvswarm.engines`) hold
    their engine's exact shape.
    """

    name: str = "generic"
    path: str = "/tokenize"
    text_key: str = "prompt"
    # Key carrying the model name in the body, None when the endpoint takes none.
    model_key: str | None = "model"
    # Fixed body fields (e.g. asking not to add a BOS token).
    extra: tuple[tuple[str, Any], ...] = ()
    # Response key holding the count; None: the length of the `tokens` list.
    count_key: str | None = "count"

    def body(self, text: str, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {self.text_key: text, **dict(self.extra)}
        if self.model_key is not None and model:
            body[self.model_key] = model
        return body

    def read_count(self, data: Any) -> int:
        if not isinstance(data, dict):
            raise ValueError("response is not a JSON object")
        if self.count_key is not None and isinstance(data.get(self.count_key), int):
            return data[self.count_key]
        tokens = data.get("tokens")
        if not isinstance(tokens, list):
            raise ValueError(f"response has neither '{self.count_key}' nor a 'tokens' list")
        return len(tokens)


GENERIC_TOKENIZE = TokenizeShape()


def tokenize_url(base_url: str, shape: TokenizeShape) -> str:
    """The tokenize endpoint of a server whose OpenAI base URL is `base_url` (at its root)."""
    return server_root(base_url) + shape.path


class ServerSizer:
    """Counts tokens with the server's `POST /tokenize`; `calls` counts the requests made.

    Requests go over keep-alive connections, kept for the next count (one per greenlet
    counting at the same time), so a steady run makes no connection (and no DNS lookup)
    per count."""

    method = "server"
    local = False

    def __init__(
        self,
        url: str,
        model: str = "",
        shape: TokenizeShape = GENERIC_TOKENIZE,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.model = model
        self.shape = shape
        self.timeout_s = timeout_s
        self.calls = 0
        self.connections = 0
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._idle: list[http.client.HTTPConnection] = []
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"

    def count(self, text: str) -> int:
        self.calls += 1
        body = orjson.dumps(self.shape.body(text, self.model))
        try:
            try:
                status, reason, data = self._post(body, reused=bool(self._idle))
            except _Stale:
                status, reason, data = self._post(body, reused=False)
            if status >= 400:
                raise TokenizeError(f"POST {self.url}: HTTP {status} {reason}")
            return self.shape.read_count(orjson.loads(data))
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise TokenizeError(f"POST {self.url}: {_reason(exc)}") from None

    def _post(self, body: bytes, *, reused: bool) -> tuple[int, str, bytes]:
        connection = self._idle.pop() if reused else self._connection()
        try:
            connection.request("POST", self._path, body, self._headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            if reused:
                raise _Stale from exc  # the server closed an idle connection: retry once
            raise
        if response.will_close:
            connection.close()
        else:
            self._idle.append(connection)
        return response.status, response.reason, data

    def _connection(self) -> http.client.HTTPConnection:
        self.connections += 1
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return kind(self._netloc, timeout=self.timeout_s)

    def __repr__(self) -> str:
        return f"ServerSizer({self.url!r}, shape={self.shape.name!r})"


class _Stale(Exception):
    """A kept connection failed before answering (the server closed it while idle)."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__


# --- a local Hugging Face tokenizer --------------------------------------------------------


class HFSizer:
    """Counts tokens with a local `tokenizers.Tokenizer`."""

    method = "hf"
    local = True

    def __init__(self, tokenizer: tokenizers.Tokenizer, source: str = "") -> None:
        self.tokenizer = tokenizer
        self.source = source

    @classmethod
    def load(cls, name_or_path: str | Path) -> HFSizer:
        """Load from a tokenizer.json, a directory holding one, or the local HF cache.

        A Hub repo id (`Qwen/Qwen2.5-7B-Instruct`) is looked up in the local Hugging Face
        cache only; nothing is downloaded. Raises `FileNotFoundError` naming where it looked.
        """
        try:
            from tokenizers import Tokenizer
        except ModuleNotFoundError:
            raise KvswarmError(
                "tokenizer.method 'hf' needs the tokenizers package: pip install 'kvswarm[hf]'"
            ) from None

        path = find_tokenizer_file(name_or_path)
        return cls(Tokenizer.from_file(str(path)), source=str(path))

    def count(self, text: str) -> int:
        # The batch call skips computing offsets: about 40% faster on long texts.
        return len(self.tokenizer.encode_batch_fast([text], add_special_tokens=False)[0].ids)

    def __repr__(self) -> str:
        return f"HFSizer({self.source!r})"


def find_tokenizer_file(name_or_path: str | Path) -> Path:
    """The tokenizer.json for a path, a directory, or a Hub repo id in the local HF cache."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return path / "tokenizer.json"
        raise FileNotFoundError(f"{path} holds no tokenizer.json")
    repo = _hf_cache_dir() / ("models--" + str(name_or_path).replace("/", "--"))
    for snapshot in _snapshots(repo):
        if (snapshot / "tokenizer.json").is_file():
            return snapshot / "tokenizer.json"
    raise FileNotFoundError(f"no such file or directory, and no tokenizer.json under {repo}")


def _hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "hub"


def _snapshots(repo: Path) -> list[Path]:
    """The repo's snapshots, the one `refs/main` points at first."""
    snapshots = sorted((repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []
    main = repo / "refs" / "main"
    if main.is_file():
        preferred = repo / "snapshots" / main.read_text().strip()
        snapshots.sort(key=lambda s: s != preferred)
    return snapshots


# --- a calibrated characters-per-token ratio -----------------------------------------------


class RatioSizer:
    """Estimates tokens as characters / `chars_per_token`.

    `overhead_tokens` is what calibration found the server adds to every prompt (its chat
    template); it is reported, not counted.
    """

    method = "ratio"
    local = True

    def __init__(self, chars_per_token: float, overhead_tokens: float = 0.0) -> None:
        if chars_per_token <= 0:
            raise ValueError("chars_per_token must be > 0")
        self.chars_per_token = chars_per_token
        self.overhead_tokens = overhead_tokens

    @classmethod
    def calibrated(cls, observations: Sequence[tuple[str, int]]) -> RatioSizer:
        """Fit from `(prompt_text, usage.prompt_tokens)` pairs.

        With texts of two or more lengths, a least-squares line separates the per-character
        rate from the constant the chat template adds; with one, the ratio is taken as is.
        """
        points = [(len(text), tokens) for text, tokens in observations if tokens > 0]
        if not points:
            raise ValueError("no observation with a positive token count")
        lengths = {chars for chars, _ in points}
        if len(lengths) >= 2:
            n = len(points)
            mean_c = sum(c for c, _ in points) / n
            mean_t = sum(t for _, t in points) / n
            var = sum((c - mean_c) ** 2 for c, _ in points)
            slope = sum((c - mean_c) * (t - mean_t) for c, t in points) / var
            if slope > 0:
                overhead = mean_t - slope * mean_c
                return cls(1.0 / slope, overhead_tokens=max(0.0, overhead))
        return cls(sum(c for c, _ in points) / sum(t for _, t in points))

    def count(self, text: str) -> int:
        return round(len(text) / self.chars_per_token)

    def __repr__(self) -> str:
        return f"RatioSizer({self.chars_per_token:.3f})"


def calibration_probes(seed: int = 0) -> tuple[str, str]:
    """Two deterministic texts (about 700 and 2,800 tokens) to calibrate a `RatioSizer`.

    The first mixes prose, code and instructions, like the scenarios' prompts; the second
    is the first four times over, so the two differ only in length and a line through
    their counts separates the per-character rate from the chat template's constant.
    """
    from kvswarm.workloads import text

    parts = []
    for kind in (text.prose, text.code, text.instructions):
        parts.append(_Draft(kind(text.seeded(seed, "calibration", kind.__name__))).cut(1000))
    probe = "\n\n".join(parts)
    return probe, "\n\n".join([probe] * 4)


# --- choosing a sizer ----------------------------------------------------------------------


@dataclass(frozen=True)
class SizerChoice:
    """The sizer `choose_sizer` settled on, and why, for run.json."""

    sizer: TokenSizer
    method: str
    detail: str
    skipped: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "detail": self.detail, "skipped": list(self.skipped)}


def choose_sizer(
    config: TokenizerConfig,
    *,
    base_url: str | None = None,
    model: str = "",
    shape: TokenizeShape | None = GENERIC_TOKENIZE,
    api_key: str | None = None,
    observe: Callable[[str], int] | None = None,
    timeout_s: float = 10.0,
) -> SizerChoice:
    """Pick how prompt lengths are sized, following `config.method`.

    `auto` prefers the server's tokenize endpoint (`config.tokenize_url`, else derived from
    `base_url`) called in `shape` (the engine profile's `tokenize`; None, for an engine
    with no known endpoint, tries the generic shape), then the local tokenizer
    `config.hf_name`, then a ratio. The ratio is calibrated by calling `observe(text)`,
    which must send `text` as a prompt and return the server's `usage.prompt_tokens` (the
    caller owns HTTP), on `calibration_probes()`; without `observe`, or when it fails,
    `config.chars_per_token` is used. An explicitly requested
    method that cannot be used is an error (`ConfigError` for the config's own mistakes,
    `TokenizeError` for an unreachable endpoint).
    """
    skipped: list[str] = []
    shape = shape or GENERIC_TOKENIZE
    url = config.tokenize_url or (tokenize_url(base_url, shape) if base_url else None)
    if config.method in ("auto", "server"):
        if url is None:
            if config.method == "server":
                raise ConfigError("tokenizer.method: 'server' needs tokenizer.tokenize_url")
            skipped.append("server: no tokenize URL")
        else:
            sizer = ServerSizer(url, model, shape, api_key=api_key, timeout_s=timeout_s)
            try:
                sizer.count("kvswarm checks the tokenize endpoint.")
                return SizerChoice(sizer, "server", f"POST {url} ({shape.name})", tuple(skipped))
            except TokenizeError as exc:
                if config.method == "server":
                    raise
                skipped.append(f"server: {exc}")
    if config.method in ("auto", "hf"):
        if config.hf_name is None:
            if config.method == "hf":
                raise ConfigError("tokenizer.hf_name: required when tokenizer.method is 'hf'")
            skipped.append("hf: tokenizer.hf_name is not set")
        else:
            try:
                sizer = HFSizer.load(config.hf_name)
                return SizerChoice(sizer, "hf", f"tokenizer {sizer.source}", tuple(skipped))
            except Exception as exc:  # tokenizers raises its own Exception subclass
                reason = f"cannot load '{config.hf_name}' offline: {exc}"
                if config.method == "hf":
                    raise ConfigError(f"tokenizer.hf_name: {reason}") from None
                skipped.append(f"hf: {reason}")
    return _ratio_choice(config, observe, skipped)


def _ratio_choice(
    config: TokenizerConfig, observe: Callable[[str], int] | None, skipped: list[str]
) -> SizerChoice:
    if observe is not None:
        try:
            observations = [(probe, observe(probe)) for probe in calibration_probes()]
            sizer = RatioSizer.calibrated(observations)
            detail = (
                f"{sizer.chars_per_token:.3f} chars/token calibrated from usage.prompt_tokens "
                f"of {len(observations)} prompts (template overhead "
                f"{sizer.overhead_tokens:.0f} tokens)"
            )
            return SizerChoice(sizer, "ratio", detail, tuple(skipped))
        except Exception as exc:  # whatever the caller's HTTP raised
            skipped.append(f"ratio calibration: {exc}")
    sizer = RatioSizer(config.chars_per_token)
    detail = f"{config.chars_per_token} chars/token from tokenizer.chars_per_token"
    return SizerChoice(sizer, "ratio", detail, tuple(skipped))


# --- cutting text to a length in tokens ----------------------------------------------------


@dataclass(frozen=True)
class Fitted:
    """Text cut to size; `tokens` is its length as the sizer counted or estimated it."""

    text: str
    tokens: int


# Characters a draft generates between two calls of its `pause`.
PAUSE_EVERY_CHARS = 2048


class _Draft:
    """A lazily extended text stream, cut at word ends (so cuts are prefixes of each other).

    `pause`, when given, is called after every `PAUSE_EVERY_CHARS` generated characters."""

    def __init__(self, pieces: Iterable[str], pause: Callable[[], Any] | None = None) -> None:
        self._pieces: Iterator[str] = iter(pieces)
        self._text = ""
        self._done = False
        self._pause = pause

    def _ensure(self, chars: int) -> None:
        """Extend until there is a word end beyond `chars` (or the stream ends)."""
        if self._done or len(self._text) > chars + 64:
            return
        parts = [self._text]
        have = len(self._text)
        want = max(chars + 256, int(chars * 1.1))
        pause = self._pause
        next_pause = have + PAUSE_EVERY_CHARS
        for piece in self._pieces:
            parts.append(piece)
            have += len(piece)
            if have >= want:
                break
            if pause is not None and have >= next_pause:
                pause()
                next_pause = have + PAUSE_EVERY_CHARS
        else:
            self._done = True
        self._text = "".join(parts)

    def cut(self, chars: int) -> str:
        """The text up to the last word end at or before `chars` (at least one word)."""
        self._ensure(chars)
        text = self._text
        if chars >= len(text):
            return text.rstrip()
        end = max(text.rfind(" ", 0, chars + 1), text.rfind("\n", 0, chars + 1))
        if end <= 0:
            return self.cut_after(0)
        return text[:end].rstrip()

    def prefix(self, chars: int) -> str:
        """The first `chars` characters as they are (a cut inside a word)."""
        self._ensure(chars)
        return self._text[:chars]

    def cut_after(self, chars: int) -> str:
        """The shortest cut longer than `chars` characters (the whole text if none)."""
        self._ensure(chars)
        while True:
            text = self._text
            match = _WORD_END.search(text, chars)
            if match is not None:
                return text[: match.end()]
            if self._done:
                return text.rstrip()
            self._ensure(len(text))


_WORD_END = re.compile(r"\S(?=\s)")


class TextFitter:
    """Cuts text streams to a length in tokens with one sizer, learning chars/token per kind.

    With a `local` sizer every text is counted and cut until it is within `tolerance` of
    its target (a few counts each). With a remote one (the server's /tokenize), shared
    prefixes are still counted exactly (`exact=True`), and so are the first
    `CALIBRATION_TEXTS` texts of each kind; after that a text is cut, and counted, by the
    characters-per-token ratio measured on its kind, so requests cost no HTTP call, or
    one when the caller asks to `verify` (a prompt that is unique from end to end).
    """

    MAX_COUNTS = 12
    CALIBRATION_TEXTS = 3
    # ... and, where more are needed, texts until this many tokens of the kind are counted.
    CALIBRATION_TOKENS = 0

    def __init__(self, sizer: TokenSizer, chars_per_token: float = 4.0) -> None:
        self.sizer = sizer
        # Called now and then while text is generated (every `PAUSE_EVERY_CHARS`), so a
        # cooperative caller can let other work run: the Locust glue sets a yield to the
        # event loop, so building a long prompt never holds other users' streams for long.
        self.pause: Callable[[], Any] | None = None
        self.default_chars_per_token = getattr(sizer, "chars_per_token", chars_per_token)
        self._chars: dict[str, int] = {}  # per kind: characters counted by the sizer
        self._tokens: dict[str, int] = {}  # ... and the tokens they made
        self._texts: dict[str, int] = {}  # ... and how many texts were sized

    def chars_per_token(self, kind: str) -> float:
        tokens = self._tokens.get(kind, 0)
        return self._chars[kind] / tokens if tokens else self.default_chars_per_token

    def count(self, text: str, kind: str) -> int:
        """`text` in tokens: counted, or estimated once a remote sizer's kind is calibrated."""
        if not text:
            return 0
        if self._counts(kind):
            return self._count(text, kind)
        return max(1, round(len(text) / self.chars_per_token(kind)))

    def fit(
        self,
        pieces: Iterable[str],
        target: int,
        kind: str,
        *,
        exact: bool = False,
        verify: bool = False,
    ) -> Fitted:
        """The prefix of the stream `pieces` closest to `target` tokens, cut at a word end.

        With a remote sizer, `exact` counts until within tolerance (shared prefixes, once
        each); `verify` counts once and corrects the cut by the text's own measured ratio
        (for prompts that are all unique, where a ratio's error is the prompt's error).
        """
        if target <= 0:
            return Fitted("", 0)
        draft = _Draft(pieces, self.pause)
        if self._counts(kind) or exact:
            return self._fit_counted(draft, target, kind)
        ratio = self.chars_per_token(kind)
        text = draft.cut(round(target * ratio))
        if not verify:
            return Fitted(text, max(1, round(len(text) / ratio)))
        tokens = self._count(text, kind)
        if abs(tokens - target) <= self.tolerance(target):
            return Fitted(text, tokens)
        own_ratio = len(text) / max(1, tokens)
        corrected = draft.cut(round(len(text) + (target - tokens) * own_ratio))
        return Fitted(corrected, tokens + round((len(corrected) - len(text)) / own_ratio))

    def _counts(self, kind: str) -> bool:
        """Whether to size this text of `kind` with the sizer (and note one more text)."""
        texts = self._texts.get(kind, 0)
        self._texts[kind] = texts + 1
        return (
            self.sizer.local
            or texts < self.CALIBRATION_TEXTS
            or self._tokens.get(kind, 0) < self.CALIBRATION_TOKENS
        )

    def tolerance(self, target: int) -> int:
        """How far from `target` a counted fit may stop: 0.2%, at least one token."""
        return max(1, target // 500)

    def _count(self, text: str, kind: str) -> int:
        tokens = self.sizer.count(text)
        self._chars[kind] = self._chars.get(kind, 0) + len(text)
        self._tokens[kind] = self._tokens.get(kind, 0) + tokens
        return tokens

    def _fit_counted(self, draft: _Draft, target: int, kind: str) -> Fitted:
        """Count one cut in full, then only the text between it and each later cut.

        Cuts fall at word ends and differences start with whitespace, where byte-level
        BPE pre-tokenizers split, so the sum is the full count (exactly for GPT-2-style
        splitting, within a token for those that glue punctuation to newlines).
        """
        tolerance = self.tolerance(target)
        anchor = draft.cut(round(target * self.chars_per_token(kind)))
        anchor_tokens = self._count(anchor, kind)
        below: tuple[int, int] = (0, 0)  # (chars, tokens) of the longest cut under target
        above: tuple[int, int] | None = None  # ... of the shortest cut over target
        best = Fitted("", 0)
        text, tokens = anchor, anchor_tokens
        for _ in range(self.MAX_COUNTS):
            if _closer(tokens, best.tokens, target):
                best = Fitted(text, tokens)
            if abs(tokens - target) <= tolerance:
                break
            if tokens < target:
                below = max(below, (len(text), tokens))
            elif above is None or len(text) < above[0]:
                above = (len(text), tokens)
            next_text = self._next_cut(draft, target, kind, below, above, len(text), tokens)
            if next_text is None:
                break
            text = next_text
            if len(text) >= len(anchor):
                tokens = anchor_tokens + self._count(text[len(anchor) :], kind)
            else:
                tokens = anchor_tokens - self._count(anchor[len(text) :], kind)
        if abs(best.tokens - target) > tolerance and above is not None:
            return self._cut_in_word(draft, target, kind, below[0], above[0], best)
        return best

    def _cut_in_word(
        self, draft: _Draft, target: int, kind: str, low: int, high: int, best: Fitted
    ) -> Fitted:
        """Bisect the characters of the one word that straddles the target.

        Only for short texts (a word of several tokens is a large share of them); long
        ones always have a word end within tolerance.
        """
        if high - low > 64 or target > 1000:
            return best
        while high - low > 1:
            middle = (low + high) // 2
            text = draft.prefix(middle)
            if text[-1].isspace():
                low = middle
                continue
            tokens = self._count(text, kind)
            if _closer(tokens, best.tokens, target):
                best = Fitted(text, tokens)
            if tokens == target:
                break
            if tokens < target:
                low = middle
            else:
                high = middle
        return best

    def _next_cut(
        self,
        draft: _Draft,
        target: int,
        kind: str,
        below: tuple[int, int],
        above: tuple[int, int] | None,
        chars: int,
        tokens: int,
    ) -> str | None:
        """The next cut to try: interpolated inside the bracket, or extrapolated past it."""
        if above is None:
            guess = chars + (target - tokens) * self.chars_per_token(kind)
            text = draft.cut(round(guess))
            return text if len(text) > below[0] else draft.cut_after(below[0])
        span_tokens = above[1] - below[1]
        guess = below[0] + (target - below[1]) * (above[0] - below[0]) / max(1, span_tokens)
        text = draft.cut(round(guess))
        if len(text) <= below[0]:
            text = draft.cut_after(below[0])
        if len(text) >= above[0]:
            return None  # no word end between the bracket's ends: the bracket is the answer
        return text


def _closer(tokens: int, best: int, target: int) -> bool:
    """Whether `tokens` is a better fit than `best`; on a tie, the shorter one wins."""
    return (abs(tokens - target), tokens) < (abs(best - target), best)


# --- achieved lengths ----------------------------------------------------------------------


@dataclass(frozen=True)
class LengthSummary:
    """Achieved prompt lengths versus their targets; errors are (achieved-target)/target, %."""

    count: int
    target_mean: float
    achieved_mean: float
    error_mean_pct: float
    error_std_pct: float
    error_min_pct: float
    error_max_pct: float
    within_2pct: float  # share of prompts within ±2% of their target

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class LengthStats:
    """Running sums of achieved vs target lengths; constant memory, mergeable across workers.

    `as_state()`/`from_state()` carry it as plain data (worker -> master messages).
    """

    count: int = 0
    target_sum: float = 0.0
    achieved_sum: float = 0.0
    error_sum: float = 0.0
    error_sq_sum: float = 0.0
    error_min: float = math.inf
    error_max: float = -math.inf
    within_2pct: int = 0

    def add(self, target: int, achieved: int) -> None:
        """Record one prompt (`target` > 0)."""
        error = 100.0 * (achieved - target) / target
        self.count += 1
        self.target_sum += target
        self.achieved_sum += achieved
        self.error_sum += error
        self.error_sq_sum += error * error
        self.error_min = min(self.error_min, error)
        self.error_max = max(self.error_max, error)
        self.within_2pct += abs(error) <= 2.0

    def merge(self, other: LengthStats) -> None:
        self.count += other.count
        self.target_sum += other.target_sum
        self.achieved_sum += other.achieved_sum
        self.error_sum += other.error_sum
        self.error_sq_sum += other.error_sq_sum
        self.error_min = min(self.error_min, other.error_min)
        self.error_max = max(self.error_max, other.error_max)
        self.within_2pct += other.within_2pct

    def summary(self) -> LengthSummary:
        n = self.count
        if n == 0:
            return LengthSummary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        mean = self.error_sum / n
        variance = max(0.0, self.error_sq_sum / n - mean * mean)
        return LengthSummary(
            count=n,
            target_mean=self.target_sum / n,
            achieved_mean=self.achieved_sum / n,
            error_mean_pct=mean,
            error_std_pct=math.sqrt(variance),
            error_min_pct=self.error_min,
            error_max_pct=self.error_max,
            within_2pct=self.within_2pct / n,
        )

    def as_state(self) -> dict[str, float | int | None]:
        state: dict[str, float | int | None] = {
            "count": self.count,
            "target_sum": self.target_sum,
            "achieved_sum": self.achieved_sum,
            "error_sum": self.error_sum,
            "error_sq_sum": self.error_sq_sum,
            "error_min": None if self.count == 0 else self.error_min,
            "error_max": None if self.count == 0 else self.error_max,
            "within_2pct": self.within_2pct,
        }
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LengthStats:
        stats = cls(
            count=int(state["count"]),
            target_sum=float(state["target_sum"]),
            achieved_sum=float(state["achieved_sum"]),
            error_sum=float(state["error_sum"]),
            error_sq_sum=float(state["error_sq_sum"]),
            within_2pct=int(state["within_2pct"]),
        )
        if state.get("error_min") is not None:
            stats.error_min = float(state["error_min"])
            stats.error_max = float(state["error_max"])
        return stats
