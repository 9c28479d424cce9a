"""The built-in sample source: real text already on the machine, grouped by topic into dated drops.

Text comes from the plain-text ``pydoc`` rendering of standard-library modules and, where present,
README / Markdown / text files under ``/usr/share/doc``. Each drop (``day-01-os-files``,
``day-02-networking-email``...) holds one topic, so consecutive nightly runs see a real shift of
domain. Output is deterministic for a given Python and set of installed packages (fixed dates,
sorted inputs), so regenerating the sample yields byte-identical shards that ingestion recognises.
"""

import contextlib
import gzip
import importlib
import io
import json
import pydoc
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from lmforge_core.fileio import atomic_write

DEFAULT_START = date(2026, 1, 1)
DOC_ROOT = Path("/usr/share/doc")
_TEXT_NAMES = re.compile(r"^(readme|news|faq|todo|usage|howto|intro)|\.(txt|md|rst)$", re.IGNORECASE)
_SKIP_SECTIONS = {"MODULE REFERENCE", "DATA", "FILE", "VERSION", "AUTHOR", "CREDITS", "PACKAGE CONTENTS",
                  "SUBMODULES"}
_INHERITED = re.compile(r"^\s*(Methods|Data descriptors|Data and other attributes|Class methods|"
                        r"Static methods|Readonly properties) inherited from ")


@dataclass(frozen=True)
class Topic:
    slug: str
    modules: tuple[str, ...]
    doc_keywords: tuple[str, ...]


TOPICS: tuple[Topic, ...] = (
    Topic("os-files",
          ("os", "os.path", "shutil", "pathlib", "glob", "fnmatch", "tempfile", "stat", "filecmp", "io",
           "fileinput", "sys", "platform", "errno", "pwd", "grp", "resource", "mmap"),
          ("coreutils", "findutils", "util-linux", "procps", "e2fsprogs", "diffutils", "file", "tar", "bash",
           "grep", "sed", "less", "rsync", "lsof", "psmisc", "mount", "acl", "attr")),
    Topic("networking-email",
          ("socket", "ssl", "select", "selectors", "http.client", "http.server", "http.cookies",
           "urllib.request", "urllib.parse", "ftplib", "smtplib", "poplib", "imaplib", "email.message",
           "email.utils", "email.headerregistry", "email.policy", "mailbox", "ipaddress", "socketserver",
           "xmlrpc.client"),
          ("curl", "openssl", "openssh", "wget", "gnutls", "iproute2", "net-tools", "krb5", "ldap", "nghttp2",
           "libssh", "ca-certificates", "socat", "mosquitto", "nats", "netbase")),
    Topic("data-formats-text",
          ("json", "csv", "xml.etree.ElementTree", "xml.dom.minidom", "html.parser", "configparser",
           "tomllib", "pickle", "struct", "base64", "binascii", "zlib", "gzip", "bz2", "lzma", "zipfile",
           "tarfile", "string", "textwrap", "difflib", "re", "unicodedata", "codecs"),
          ("xml", "json", "yaml", "zstd", "gzip", "bzip2", "xz", "zip", "lz4", "brotli", "jq", "yq", "expat",
           "libarchive", "icu", "xxd", "sqlite")),
    Topic("concurrency",
          ("threading", "multiprocessing", "concurrent.futures", "asyncio.tasks", "asyncio.events",
           "asyncio.queues", "asyncio.locks", "asyncio.streams", "queue", "sched", "subprocess", "signal",
           "contextvars", "selectors"),
          ("erlang", "rabbitmq", "redis", "dbus", "libevent", "libuv", "systemd", "galera", "mariadb",
           "postgresql", "tmux", "liburing")),
    Topic("numbers-math",
          ("math", "cmath", "decimal", "fractions", "random", "statistics", "numbers", "operator",
           "functools", "itertools", "heapq", "bisect", "array", "collections"),
          ("mpfr", "gmp", "libmpc", "bc", "libisl", "z3", "gawk", "mawk")),
    Topic("dev-tools",
          ("unittest", "doctest", "pdb", "trace", "timeit", "cProfile", "logging", "warnings", "inspect",
           "dis", "ast", "tokenize", "argparse", "typing", "dataclasses", "traceback"),
          ("gcc", "gdb", "git", "cmake", "binutils", "make", "valgrind", "heaptrack", "strace", "llvm",
           "ninja", "pkg-config", "universal-ctags", "patch", "vim")),
)


def drop_name(day: int, topic: Topic) -> str:
    return f"day-{day:02d}-{topic.slug}"


def _pydoc_text(module_name: str) -> str | None:
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            module = importlib.import_module(module_name)
            return pydoc.render_doc(module, renderer=pydoc.plaintext)
    except Exception:  # a module that cannot be imported or rendered here is simply not sampled
        return None


def _sections(text: str) -> Iterator[tuple[str, list[str]]]:
    """(SECTION NAME, its lines) of a pydoc page (section headers are upper-case at column 0)."""
    name, lines = "", []
    for line in text.splitlines():
        if line and not line[0].isspace() and line.isupper():
            if lines:
                yield name, lines
            name, lines = line.strip(), []
        else:
            lines.append(line)
    if lines:
        yield name, lines


def _strip_class_block(lines: list[str]) -> list[str]:
    """Drop pydoc's ' |  ' gutters and the inherited-member listings (identical across classes)."""
    out, skipping = [], False
    for line in lines:
        bare = re.sub(r"^(\s*)\|  ?", r"\1", line)
        if _INHERITED.match(bare):
            skipping = True
            continue
        if set(bare.strip()) == {"-"}:
            skipping = False
            continue
        if not skipping:
            out.append(bare)
    return out


def _entries(lines: list[str], starts: re.Pattern[str]) -> Iterator[list[str]]:
    block: list[str] = []
    for line in lines:
        if starts.match(line) and block:
            yield block
            block = []
        block.append(line)
    if block:
        yield block


def _chunks(title: str, blocks: list[str], min_words: int, max_words: int) -> Iterator[str]:
    """Join blocks into documents of roughly min..max words, each headed by `title`."""
    current: list[str] = []
    words = 0
    for block in blocks:
        n = len(block.split())
        if current and words >= min_words and words + n > max_words:
            yield f"{title}\n\n" + "\n\n".join(current)
            current, words = [], 0
        current.append(block)
        words += n
        if words >= min_words and words >= max_words // 2:
            yield f"{title}\n\n" + "\n\n".join(current)
            current, words = [], 0
    if current and words >= min_words // 2:
        yield f"{title}\n\n" + "\n\n".join(current)


def pydoc_documents(module_name: str) -> Iterator[str]:
    """Documents of one module: its description, each class, and groups of its functions."""
    text = _pydoc_text(module_name)
    if not text:
        return
    blocks: list[str] = []
    for name, lines in _sections(text):
        if name in _SKIP_SECTIONS or not name:
            continue
        if name == "CLASSES":
            for entry in _entries(lines, re.compile(r"^    class ")):
                body = "\n".join(_strip_class_block(entry)).strip()
                if body.startswith("class "):
                    blocks.append(body)
        elif name == "FUNCTIONS":
            blocks.extend("\n".join(e).strip() for e in _entries(lines, re.compile(r"^    \S")))
        else:
            blocks.append(f"{name.title()}\n" + "\n".join(lines).strip())
    yield from _chunks(f"Python module {module_name}", [b for b in blocks if b], 80, 500)


def _read_doc_file(path: Path, cap: int = 400_000) -> str | None:
    try:
        raw = gzip.open(path).read(cap) if path.suffix == ".gz" else path.read_bytes()[:cap]
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return None


def usr_share_doc_documents(keywords: tuple[str, ...], root: Path = DOC_ROOT,
                            max_files: int = 60) -> Iterator[tuple[str, str]]:
    """(relative path, document) for README/text files of packages whose name starts with a keyword."""
    if not root.is_dir():
        return
    taken = 0
    for package in sorted(p for p in root.iterdir() if p.is_dir()):
        if not package.name.startswith(keywords) and not any(f"-{k}" in package.name for k in keywords):
            continue
        for path in sorted(package.rglob("*")):
            name = path.name.removesuffix(".gz")
            if not path.is_file() or path.is_symlink() or not _TEXT_NAMES.search(name):
                continue
            text = _read_doc_file(path)
            if not text or len(text.split()) < 60:
                continue
            rel = path.relative_to(root).as_posix()
            paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
            for i, doc in enumerate(_chunks(f"{rel}", paragraphs, 80, 600)):
                yield f"{rel}#{i}", doc
            taken += 1
            if taken >= max_files:
                return


def drop_records(topic: Topic, day: int, start: date, docs_per_drop: int,
                 doc_root: Path = DOC_ROOT) -> list[dict]:
    """The JSONL records of one drop, pydoc and /usr/share/doc documents interleaved, capped."""
    created = (start + timedelta(days=day - 1)).isoformat()
    meta = {"topic": topic.slug, "day": day}
    pydoc_docs = [
        {"id": f"pydoc:{m}#{i}", "source": f"pydoc:{m}", "text": text}
        for m in topic.modules
        for i, text in enumerate(pydoc_documents(m))
    ]
    share_docs = [
        {"id": f"doc:{rel}", "source": f"usr-share-doc:{rel.split('/')[0]}", "text": text}
        for rel, text in usr_share_doc_documents(topic.doc_keywords, doc_root)
    ]
    share_quota = min(len(share_docs), docs_per_drop // 3)
    chosen = pydoc_docs[: docs_per_drop - share_quota] + share_docs[:share_quota]
    return [{**r, "created_at": created, "meta": meta} for r in chosen]


def write_sample(directory: Path, days: int, start: date = DEFAULT_START, docs_per_drop: int = 250,
                 doc_root: Path = DOC_ROOT) -> list[dict]:
    """Write `days` drops under `directory`; returns one summary per drop (name, path, documents, bytes)."""
    if not 1 <= days <= len(TOPICS):
        raise ValueError(f"--days must be between 1 and {len(TOPICS)} (one drop per topic); got {days}")
    summary = []
    for day, topic in enumerate(TOPICS[:days], start=1):
        folder = directory / drop_name(day, topic)
        folder.mkdir(parents=True, exist_ok=True)
        records = drop_records(topic, day, start, docs_per_drop, doc_root)
        payload = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode()
        path = folder / "part-00000.jsonl"
        atomic_write(path, payload)
        summary.append({"drop": folder.name, "path": str(path), "documents": len(records), "bytes": len(payload)})
    return summary
