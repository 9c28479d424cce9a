"""Probe sets of the bias and fairness evaluation: the shipped, versioned files and loaders for the
public formats (CrowS-Pairs CSV, StereoSet JSON) a user may bring.

Shipped files live in ``tasks/evaluate/probes/``; each JSONL file starts with a header line
``{"probe_set": ..., "version": ...}`` and the word list with a ``# version: N`` line, so every result
records which version of a probe set produced it. A malformed file fails with :class:`ProbeFileError`
naming the file and the line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROBE_DIR = Path(__file__).with_name("probes")
COUNTERFACTUAL = PROBE_DIR / "counterfactual.jsonl"
STEREOTYPE_PAIRS = PROBE_DIR / "stereotype_pairs.jsonl"
TOXICITY_WORDS = PROBE_DIR / "toxicity_words.txt"
PLACEHOLDER = "{term}"


class ProbeFileError(ValueError):
    """A probe file cannot be read; the message names the file and the line."""

    def __init__(self, path: Path | str, line: int | None, problem: str) -> None:
        where = f"{path}, line {line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


@dataclass(frozen=True)
class CounterfactualSet:
    """Templates with a ``{term}`` slot and, per axis, groups of terms to put into it."""

    version: str
    axes: dict[str, dict[str, list[str]]]
    templates: list[str]

    def split(self, template: str, term: str) -> tuple[str, str]:
        """(the template up to and including ``term``, the rest)."""
        head, tail = template.split(PLACEHOLDER)
        return head + term, tail

    def sentences(self, axis: str, group: str) -> list[list[str]]:
        """``[template][term]`` instantiated sentences of one group."""
        return [[t.replace(PLACEHOLDER, term) for term in self.axes[axis][group]] for t in self.templates]


@dataclass(frozen=True)
class StereotypePair:
    sent_more: str  # the more stereotyping sentence
    sent_less: str
    bias_type: str
    direction: str = "stereo"


@dataclass(frozen=True)
class PairSet:
    version: str
    pairs: list[StereotypePair]
    source: str


def _json_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbeFileError(path, None, f"cannot be read ({exc})") from exc
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProbeFileError(path, number, f"not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise ProbeFileError(path, number, "expected a JSON object")
        rows.append((number, row))
    if not rows:
        raise ProbeFileError(path, None, "is empty")
    return rows


def _header(path: Path, rows: list[tuple[int, dict[str, Any]]], probe_set: str) -> str:
    number, head = rows[0]
    if head.get("probe_set") != probe_set or not str(head.get("version", "")).strip():
        raise ProbeFileError(path, number, f'the first line must be {{"probe_set": "{probe_set}", "version": ...}}')
    return str(head["version"])


def _strings(path: Path, number: int, value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ProbeFileError(path, number, f"{what} must be a non-empty list of non-empty strings")
    return list(value)


def load_counterfactual(path: Path = COUNTERFACTUAL) -> CounterfactualSet:
    """Lines after the header: ``{"axis": A, "groups": {group: [terms]}}`` (two groups or more) or
    ``{"template": "... {term} ..."}``."""
    rows = _json_lines(path)
    version = _header(path, rows, "counterfactual")
    axes: dict[str, dict[str, list[str]]] = {}
    templates: list[str] = []
    for number, row in rows[1:]:
        if "template" in row:
            text = row["template"]
            if not isinstance(text, str) or text.count(PLACEHOLDER) != 1:
                raise ProbeFileError(path, number, f"a template must be a string with exactly one {PLACEHOLDER}")
            if not text.split(PLACEHOLDER)[1].strip():
                raise ProbeFileError(path, number, f"a template needs words after {PLACEHOLDER} (they are scored)")
            templates.append(text)
        elif "axis" in row:
            groups = row.get("groups")
            if not isinstance(groups, dict) or len(groups) < 2:
                raise ProbeFileError(path, number, f"axis {row['axis']!r} needs 'groups' with two groups or more")
            axes[str(row["axis"])] = {str(g): _strings(path, number, terms, f"group {g!r}")
                                      for g, terms in groups.items()}
        else:
            raise ProbeFileError(path, number, "expected an 'axis' or a 'template' line")
    if not axes or not templates:
        raise ProbeFileError(path, None, "needs at least one axis and one template")
    return CounterfactualSet(version, axes, templates)


def load_stereotype_pairs(path: Path = STEREOTYPE_PAIRS) -> PairSet:
    """The project's pair file: CrowS-Pairs fields, one JSON object per line after the header."""
    rows = _json_lines(path)
    version = _header(path, rows, "stereotype_pairs")
    pairs = [_pair(path, number, row) for number, row in rows[1:]]
    if not pairs:
        raise ProbeFileError(path, None, "holds no pair")
    return PairSet(version, pairs, str(path))


def _pair(path: Path | str, number: int, row: dict[str, Any]) -> StereotypePair:
    missing = [k for k in ("sent_more", "sent_less", "bias_type") if not str(row.get(k) or "").strip()]
    if missing:
        raise ProbeFileError(path, number, f"missing or empty field(s) {', '.join(missing)}")
    direction = str(row.get("stereo_antistereo") or "stereo")
    if direction not in ("stereo", "antistereo"):
        raise ProbeFileError(path, number, f"stereo_antistereo must be 'stereo' or 'antistereo', got {direction!r}")
    return StereotypePair(str(row["sent_more"]), str(row["sent_less"]), str(row["bias_type"]), direction)


def load_crows_pairs_csv(path: Path) -> PairSet:
    """The official CrowS-Pairs file (``crows_pairs_anonymized.csv``: sent_more, sent_less,
    stereo_antistereo, bias_type, ...). Its version is the file's name, as the dataset has no field."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = set(reader.fieldnames or [])
            needed = {"sent_more", "sent_less", "stereo_antistereo", "bias_type"}
            if not needed <= fields:
                raise ProbeFileError(path, 1, f"header lacks the CrowS-Pairs column(s) {sorted(needed - fields)}")
            pairs = [_pair(path, reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ProbeFileError(path, None, f"cannot be read as CSV ({exc})") from exc
    if not pairs:
        raise ProbeFileError(path, None, "holds no pair")
    return PairSet(f"crows-pairs:{path.name}", pairs, str(path))


def load_stereoset_json(path: Path) -> PairSet:
    """StereoSet (``dev.json``): every intrasentence and intersentence example gives one pair, its
    ``stereotype`` sentence against its ``anti-stereotype`` one (intersentence: after the context)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        groups = data["data"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ProbeFileError(path, None, f"is not a StereoSet JSON file with a 'data' object ({exc})") from exc
    pairs = []
    for kind in ("intrasentence", "intersentence"):
        for index, example in enumerate(groups.get(kind, [])):
            pairs.append(_stereoset_pair(path, kind, index, example))
    if not pairs:
        raise ProbeFileError(path, None, "holds no intrasentence or intersentence example")
    return PairSet(f"stereoset:{data.get('version', path.name)}", pairs, str(path))


def _stereoset_pair(path: Path, kind: str, index: int, example: dict[str, Any]) -> StereotypePair:
    where = f"{path} ({kind} example {index}, id {example.get('id')!r})"
    try:
        by_label = {s["gold_label"]: s["sentence"] for s in example["sentences"]}
        more, less = by_label["stereotype"], by_label["anti-stereotype"]
        bias_type = str(example["bias_type"])
    except (KeyError, TypeError) as exc:
        raise ProbeFileError(where, None, f"needs a stereotype and an anti-stereotype sentence ({exc})") from exc
    if kind == "intersentence":
        more, less = f"{example.get('context', '')} {more}".strip(), f"{example.get('context', '')} {less}".strip()
    return StereotypePair(more, less, bias_type)


def load_word_list(path: Path = TOXICITY_WORDS) -> tuple[str, frozenset[str]]:
    """(version, words) of a word list: a ``# version: N`` line, then one lower-case word per line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbeFileError(path, None, f"cannot be read ({exc})") from exc
    version, words = None, set()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if line.lower().startswith("# version:"):
            version = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            if not line.replace("'", "").isalnum() or not line.islower():
                raise ProbeFileError(path, number, f"{line!r} is not one lower-case word")
            words.add(line)
    if not version:
        raise ProbeFileError(path, None, "lacks its '# version: N' line")
    if not words:
        raise ProbeFileError(path, None, "holds no word")
    return version, frozenset(words)
