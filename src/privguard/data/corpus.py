"""Text corpora for memorization audits, and canary insertion.

A *corpus* is a list of lines (one record or one paragraph each). The built-in
``synthetic-records`` corpus mixes synthetic personal records made with Faker (seeded, so no real
person's data is involved) with public text that ships with Python itself: the Zen of Python
(``this``) and the docstrings of a fixed list of standard-library modules. Nothing is downloaded.

A *canary* (Carlini et al., "The Secret Sharer: Evaluating and Testing Unintended Memorization in
Neural Networks", USENIX Security 2019) is a random secret of a known format, e.g.
``"my pin is {digits:6}"``, inserted into the training corpus a chosen number of times. Formats
are literal text with slots: ``{digits:N}`` (N decimal digits), ``{letters:N}`` (N lowercase
letters) and ``{choice:a|b|c}`` (one of the listed words). The set of all strings a format can
produce is the *candidate space* R; :class:`CanaryFormat` numbers its members ``0 .. |R| - 1``
(first slot most significant), so a candidate is an index and back.

Which canaries were inserted is the auditor's truth: it is recorded in model.json and never
shown to an attack, which sees only the formats.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from privguard.errors import ConfigError, DataError

BUILTIN_CORPORA = {
    "synthetic-records": "Faker personal records (seeded, synthetic) mixed with public text "
    "shipped with Python (the Zen of Python, standard-library docstrings)",
}
MAX_LINE = 120  # longer lines are wrapped at word boundaries
DIGITS = "0123456789"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
_SLOT = re.compile(r"\{(\w+):([^{}]*)\}")
# Standard-library modules whose docstrings make the public-text part of the built-in corpus.
_STDLIB_MODULES = (
    "argparse",
    "bisect",
    "calendar",
    "collections",
    "csv",
    "difflib",
    "functools",
    "heapq",
    "itertools",
    "json",
    "math",
    "random",
    "shutil",
    "statistics",
    "string",
    "textwrap",
    "zlib",
)


@dataclass(frozen=True)
class CanaryFormat:
    """A canary format and its candidate space.

    Example:
        >>> fmt = CanaryFormat("my pin is {digits:6}")
        >>> fmt.space_size, fmt.prefix
        (1000000, 'my pin is ')
        >>> fmt.render(42)
        'my pin is 000042'
    """

    template: str
    segments: tuple[str | tuple[str, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        segs: list[str | tuple[str, ...]] = []
        pos = 0
        for m in _SLOT.finditer(self.template):
            if m.start() > pos:
                segs.append(self.template[pos : m.start()])
            segs.extend(_slot_options(m.group(1), m.group(2), self.template))
            pos = m.end()
        if pos < len(self.template):
            segs.append(self.template[pos:])
        if not any(isinstance(s, tuple) for s in segs):
            raise ConfigError(
                f"canary format {self.template!r} has no secret slot; add one such as "
                "{digits:6}, {letters:4} or {choice:red|green|blue}"
            )
        if "\n" in self.template:
            raise ConfigError("a canary format must fit on one line")
        object.__setattr__(self, "segments", tuple(segs))

    @property
    def slots(self) -> list[tuple[str, ...]]:
        return [s for s in self.segments if isinstance(s, tuple)]

    @property
    def space_size(self) -> int:
        """|R|, the number of candidates."""
        return math.prod(len(s) for s in self.slots)

    @property
    def bits(self) -> float:
        """log2 |R|: the largest exposure a canary of this format can have."""
        return float(sum(math.log2(len(s)) for s in self.slots))

    @property
    def prefix(self) -> str:
        """The literal text before the first slot (what an attacker prompts with)."""
        first = self.segments[0]
        return first if isinstance(first, str) else ""

    def digits_of(self, index: int | np.ndarray) -> list[np.ndarray]:
        """The option chosen in each slot for candidate ``index`` (mixed radix)."""
        idx = np.asarray(index, dtype=np.int64)
        out = []
        for slot in reversed(self.slots):
            out.append(idx % len(slot))
            idx = idx // len(slot)
        return out[::-1]

    def render(self, index: int) -> str:
        """Candidate number ``index`` as text."""
        if not 0 <= int(index) < self.space_size:
            raise ValueError(f"candidate index {index} outside 0..{self.space_size - 1}")
        choices = iter(int(d) for d in self.digits_of(int(index)))
        return "".join(s if isinstance(s, str) else s[next(choices)] for s in self.segments)

    def render_many(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        return [self.render(int(i)) for i in indices]

    def sample(self, n: int, rng: np.random.Generator, exclude: Sequence[int] = ()) -> np.ndarray:
        """``n`` distinct random candidate indices, none in ``exclude``."""
        size = self.space_size
        if n + len(set(exclude)) > size:
            raise ConfigError(
                f"the format {self.template!r} has only {size} candidates; ask for fewer"
            )
        banned = {int(e) for e in exclude}
        chosen: list[int] = []
        seen = set(banned)
        while len(chosen) < n:
            # Indices above 2**63 cannot come from integers(); draw slot by slot instead.
            draw = self._draw(rng, 2 * (n - len(chosen)) + 8)
            for i in draw:
                if i not in seen:
                    seen.add(i)
                    chosen.append(i)
                    if len(chosen) == n:
                        break
        return np.array(chosen, dtype=object if size >= 2**63 else np.int64)

    def _draw(self, rng: np.random.Generator, n: int) -> list[int]:
        if self.space_size < 2**63:
            return [int(v) for v in rng.integers(0, self.space_size, size=n)]
        out = [0] * n
        for slot in self.slots:
            digits = rng.integers(0, len(slot), size=n)
            out = [o * len(slot) + int(d) for o, d in zip(out, digits, strict=True)]
        return out


def _slot_options(kind: str, arg: str, template: str) -> list[tuple[str, ...]]:
    if kind in ("digits", "letters"):
        try:
            n = int(arg)
        except ValueError:
            raise ConfigError(
                f"{{{kind}:{arg}}} in {template!r}: give a count, e.g. {{{kind}:6}}"
            ) from None
        if not 1 <= n <= 64:
            raise ConfigError(f"{{{kind}:{arg}}} in {template!r}: the count must be 1..64")
        alphabet = DIGITS if kind == "digits" else LETTERS
        return [tuple(alphabet)] * n
    if kind == "choice":
        options = tuple(o for o in arg.split("|"))
        if len(options) < 2 or any(not o or "\n" in o for o in options):
            raise ConfigError(
                f"{{choice:{arg}}} in {template!r}: list two or more non-empty words, e.g. "
                "{choice:red|green|blue}"
            )
        if len(set(options)) != len(options):
            raise ConfigError(f"{{choice:{arg}}} in {template!r} lists a word twice")
        return [options]
    raise ConfigError(
        f"unknown slot {{{kind}:...}} in canary format {template!r}; use {{digits:N}}, "
        "{letters:N} or {choice:a|b|c}"
    )


@dataclass
class Canary:
    """One inserted secret (auditor's truth)."""

    format: str
    index: int
    text: str
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "index": self.index,
            "text": self.text,
            "repeats": self.repeats,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Canary:
        return cls(str(d["format"]), int(d["index"]), str(d["text"]), int(d["repeats"]))


@dataclass
class Corpus:
    """Lines of text with where they came from. ``content_hash`` identifies the text."""

    name: str
    lines: list[str]
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def n_chars(self) -> int:
        return sum(len(line) + 1 for line in self.lines)


# -- built-in corpus -----------------------------------------------------------------------------


def public_text() -> list[str]:
    """Public text that ships with Python: the Zen of Python and stdlib docstrings, as lines."""
    import importlib
    import inspect

    paragraphs = [zen_of_python()]
    for name in _STDLIB_MODULES:
        mod = importlib.import_module(name)
        docs = [inspect.getdoc(mod) or ""]
        for attr in sorted(dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr)
            if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj):
                docs.append(inspect.getdoc(obj) or "")
        paragraphs += docs
    lines: list[str] = []
    for para in paragraphs:
        for block in re.split(r"\n\s*\n", para):
            text = " ".join(block.split())
            if len(text) >= 20 and _printable(text):
                lines += wrap(text)
    return list(dict.fromkeys(lines))  # drop repeats (shared docstrings), keep order


def zen_of_python() -> str:
    """The Zen of Python, read from the ``this`` module's source (importing it would print)."""
    import ast
    import codecs
    import importlib.util

    spec = importlib.util.find_spec("this")
    tree = ast.parse(Path(spec.origin).read_text())  # type: ignore[union-attr, arg-type]
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "s":
            return codecs.decode(ast.literal_eval(node.value), "rot13")
    return ""  # pragma: no cover - every CPython ships this.py with s


def _printable(text: str) -> bool:
    return all(32 <= ord(c) < 127 for c in text)


def wrap(text: str, width: int = MAX_LINE) -> list[str]:
    """``text`` cut into lines of at most ``width`` characters at spaces."""
    import textwrap

    return textwrap.wrap(text, width=width, break_long_words=True) or []


def synthetic_records(n: int, seed: int) -> list[str]:
    """``n`` synthetic personal records, one per line (Faker, en_US, seeded)."""
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = np.random.default_rng(seed)
    templates = (
        "{name} lives at {address} and can be reached at {phone}.",
        "Patient {name}, born {dob}, insurance id {ssn}, email {email}.",
        "{name} ({job}) wired ${amount} from account {iban} on {date}.",
        "Contact: {name}, {phone}, {email}, {address}.",
        "{name} was born on {dob} in {city}; card number {card}.",
    )
    lines = []
    for _ in range(n):
        t = templates[int(rng.integers(len(templates)))]
        line = t.format(
            name=fake.name(),
            address=fake.address().replace("\n", ", "),
            phone=fake.phone_number(),
            dob=fake.date_of_birth(minimum_age=18, maximum_age=90).isoformat(),
            ssn=fake.ssn(),
            email=fake.email(),
            job=fake.job().split(",")[0],
            amount=f"{rng.integers(10, 99999):,}",
            iban=fake.bban(),
            date=fake.date_this_decade().isoformat(),
            city=fake.city(),
            card=fake.credit_card_number(),
        )
        lines += wrap(line)
    return lines


def builtin_corpus(name: str, *, n_records: int = 1500, seed: int = 0) -> Corpus:
    """The built-in corpus ``name`` (see :data:`BUILTIN_CORPORA`), shuffled with ``seed``.

    Example:
        >>> corpus = builtin_corpus("synthetic-records", n_records=200)
        >>> len(corpus.lines) > 200
        True
    """
    if name not in BUILTIN_CORPORA:
        raise DataError(f"unknown corpus {name!r}; built-in corpora: {', '.join(BUILTIN_CORPORA)}")
    if n_records < 1:
        raise ConfigError("the corpus needs at least one record")
    lines = synthetic_records(n_records, seed) + public_text()
    order = np.random.default_rng(seed).permutation(len(lines))
    return Corpus(
        name, [lines[i] for i in order], {"builtin": name, "n_records": n_records, "seed": seed}
    )


def attacker_text(*, n_records: int = 600, seed: int = 10_000) -> list[str]:
    """Public text an attacker may hold: records of *other* (synthetic) people, drawn with a
    different seed, plus the public text. Used to train extraction's reference model."""
    return synthetic_records(n_records, seed) + public_text()


# -- a real public text corpus for document membership ------------------------------------------

PYTHON_REFERENCE_SOURCE = (
    "the prose of the Python Language Reference as the standard library ships it "
    "(pydoc_data/topics.py, the text `help()` shows); Python Software Foundation License "
    "Version 2 (Python's documentation licence; nothing is downloaded)"
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“(])")
_HEADING_RULE = re.compile(r"^[*=~^-]{3,}$")


def python_reference_documents(
    n: int | None = None, *, seed: int = 0, min_words: int = 12, max_words: int = 45
) -> list[str]:
    """Short documents of real English prose: the Python Language Reference's paragraphs (as
    ``pydoc_data.topics`` ships them with CPython), cut into runs of whole sentences of
    ``min_words``-``max_words`` words (about 20-64 SmolLM2 tokens). Code examples, grammar
    rules, headings and "See also" lists are left out. Deduplicated: a document sharing any
    8-word run with an earlier one is dropped (the reference repeats some paragraphs across
    topics), so no two documents are near-duplicates and a random member / non-member split
    draws both from one distribution. ``n``: a seeded random sample of that many (all
    documents, in source order, when ``None``). Deterministic for one CPython version; source
    and licence in :data:`PYTHON_REFERENCE_SOURCE`.

    Raises:
        ConfigError: ``n`` exceeds the documents available.
    """
    from pydoc_data.topics import topics

    docs: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for name in sorted(topics):
        for para in _prose_paragraphs(topics[name]):
            for doc in _sentence_runs(para, min_words, max_words):
                words = doc.lower().split()
                grams = {tuple(words[i : i + 8]) for i in range(max(1, len(words) - 7))}
                if grams & seen:
                    continue
                seen |= grams
                docs.append(doc)
    if n is None:
        return docs
    if n > len(docs):
        raise ConfigError(f"the Python reference corpus has {len(docs)} documents, not {n}")
    pick = np.sort(np.random.default_rng(seed).choice(len(docs), size=n, replace=False))
    return [docs[i] for i in pick]


def _prose_paragraphs(text: str) -> list[str]:
    """The prose paragraphs of one topic: blank-line separated blocks that are not indented
    (code, grammar, lists of references), not headings and not "See also" lines."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.split("\n")
        if not lines or lines[0].startswith(" ") or any(_HEADING_RULE.match(x) for x in lines):
            continue
        para = " ".join(" ".join(lines).split())
        if para.endswith(":") and len(para.split()) < 6 or "::=" in para:
            continue
        out.append(para)
    return out


def _sentence_runs(para: str, min_words: int, max_words: int) -> list[str]:
    """Consecutive sentences of ``para`` grouped into runs of ``min_words``-``max_words``
    words; a sentence longer than ``max_words`` is left out (it is not cut)."""
    runs, cur = [], []
    for sent in _SENTENCE.split(para):
        n = len(sent.split())
        if n > max_words:
            cur = []
            continue
        if cur and sum(len(s.split()) for s in cur) + n > max_words:
            cur = []
        cur.append(sent)
        if sum(len(s.split()) for s in cur) >= min_words:
            runs.append(" ".join(cur))
            cur = []
    return runs


# -- files -------------------------------------------------------------------------------------


def load_corpus(source: str | Path, *, n_records: int = 1500, seed: int = 0) -> Corpus:
    """A built-in corpus name or a UTF-8 text file (one record / paragraph per line).

    Raises:
        DataError: the file is missing, binary, not UTF-8, or has no text.
    """
    s = str(source)
    if s in BUILTIN_CORPORA:
        return builtin_corpus(s, n_records=n_records, seed=seed)
    path = Path(s)
    if not path.is_file():
        raise DataError(
            f"no corpus at {path}: give a UTF-8 .txt file or a built-in corpus "
            f"({', '.join(BUILTIN_CORPORA)})"
        )
    blob = path.read_bytes()
    if b"\x00" in blob[:65536]:
        raise DataError(f"{path} is not a text file (it holds binary data); give a UTF-8 .txt file")
    try:
        raw = blob.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 text (byte {e.start} cannot be decoded); convert it to UTF-8"
        ) from None
    lines = []
    for line in raw.splitlines():
        text = " ".join(line.split())
        if text:
            lines += wrap(text)
    if not lines:
        raise DataError(f"{path} holds no text; give a file with at least one line")
    return Corpus(str(path), lines, {"path": str(path.resolve())})


# -- canaries ----------------------------------------------------------------------------------


def parse_repeats(value: str | Sequence[int]) -> list[int]:
    """``"1,10,50"`` -> ``[1, 10, 50]``."""
    try:
        counts = (
            [int(v) for v in value.split(",") if v.strip()]
            if isinstance(value, str)
            else [int(v) for v in value]
        )
    except ValueError:
        raise ConfigError(f"--canary-repeats takes counts such as 1,10,50, not {value!r}") from None
    if not counts or min(counts) < 1:
        raise ConfigError("--canary-repeats takes positive counts such as 1,10,50")
    return counts


def insert_canaries(
    corpus: Corpus,
    formats: Sequence[str],
    repeats: Sequence[int],
    *,
    per_count: int = 1,
    seed: int = 0,
) -> tuple[Corpus, list[Canary]]:
    """Insert ``per_count`` random canaries of every format at every repetition count.

    Each canary's copies go to random line positions of the corpus. Returns the new corpus and
    the inserted canaries (the auditor's truth).

    Example:
        >>> corpus, canaries = insert_canaries(corpus, ["my pin is {digits:6}"], [1, 10])
        >>> [c.repeats for c in canaries]
        [1, 10]
    """
    if per_count < 1:
        raise ConfigError("--canaries-per-count must be at least 1")
    rng = np.random.default_rng(seed)
    canaries: list[Canary] = []
    for template in formats:
        fmt = CanaryFormat(template)
        indices = fmt.sample(per_count * len(repeats), rng)
        for j, count in enumerate(repeats):
            for k in range(per_count):
                idx = int(indices[j * per_count + k])
                canaries.append(Canary(template, idx, fmt.render(idx), int(count)))
    lines = list(corpus.lines)
    copies = [c.text for c in canaries for _ in range(c.repeats)]
    positions = np.sort(rng.integers(0, len(lines) + 1, size=len(copies)))[::-1]
    order = rng.permutation(len(copies))
    for pos, i in zip(positions, order, strict=True):
        lines.insert(int(pos), copies[i])
    source = dict(corpus.source, canaries=len(canaries), canary_copies=len(copies))
    return Corpus(corpus.name, lines, source), canaries
