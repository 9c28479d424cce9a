"""Settings section for ingestion, cleaning, dedup, quality gate and tokenization (``LMFORGE_DATA__*``).

Every threshold the data stages use lives here, so a run's behaviour is fully described by its
settings; the stages never hard-code a bound.
"""

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator


class FilterThresholds(BaseModel):
    """Heuristic quality filters in the spirit of Gopher (Rae et al. 2021) and C4 (Raffel et al. 2020).

    A document fails a filter when its score falls outside the bound; every score is recorded either way.
    The class defaults are Gopher's values for web text (the `web` profile); `technical_filters()` holds the
    `technical` profile for reference documentation.
    """

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    # ("#" + "..." + "…") per word.
    max_symbol_word_ratio: float = 0.1
    # characters that are neither alphanumeric nor whitespace, over non-whitespace characters.
    max_non_alnum_fraction: float = 0.4
    max_bullet_line_fraction: float = 0.9
    max_ellipsis_line_fraction: float = 0.3
    max_dup_line_fraction: float = 0.3
    max_dup_line_char_fraction: float = 0.2
    # the four line-ratio rules above say nothing about a document of fewer non-empty lines (a one-line
    # document starting with a bullet would be "100% bullets"): below it their scores are 0.
    min_lines_for_line_ratios: int = Field(default=3, ge=1)
    # fraction of word characters covered by the most frequent n-gram, n = 2, 3, 4.
    max_top_ngram_fraction: dict[int, float] = Field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    # fraction of word characters inside n-grams that occur more than once, n = 5..10.
    max_dup_ngram_fraction: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    max_word_length: int = 1000


def technical_filters() -> FilterThresholds:
    """The `technical` profile: manual pages, pydoc, READMEs. Reference text repeats signatures and phrases
    ("Return a new ...", parameter lists) and holds long identifiers and option lists, so the repetition and
    punctuation bounds that are right for web text reject a share of real paragraphs (measured on the built-in
    sample: see the README's "Filter profiles")."""
    return FilterThresholds(
        max_mean_word_length=12.0,
        max_dup_line_fraction=0.45,
        max_dup_line_char_fraction=0.35,
        max_top_ngram_fraction={2: 0.25, 3: 0.24, 4: 0.22},
        # a document repeated twice scores about 1.0 at every n: still rejected.
        max_dup_ngram_fraction={5: 0.50, 6: 0.49, 7: 0.48, 8: 0.47, 9: 0.46, 10: 0.45},
    )


BUILT_IN_FILTER_PROFILES: dict[str, Callable[[], FilterThresholds]] = {
    "web": FilterThresholds,
    "technical": technical_filters,
}


class DedupConfig(BaseModel):
    """Exact and MinHash-LSH near-duplicate detection against everything ever accepted."""

    num_perm: int = 128
    shingle_size: int = 5
    # Defaults chosen from the graded-edit curve of `benchmarks/bench_ingest.py` (README, "Near duplicates"): at
    # least datatrove's default recall at every edit level up to 10% of the text, no unrelated document removed.
    # Estimated Jaccard similarity (of 5-word shingle sets) at or above which a candidate is a near duplicate: a
    # copy with 5% of its words changed is at about 0.6, one with 10% changed at 0.4-0.5.
    near_duplicate_threshold: float = Field(default=0.5, gt=0.0, le=1.0)
    # a document whose shingles are at least this share contained in an earlier one (an excerpt of it) is a near
    # duplicate too, whatever its Jaccard similarity; None turns the containment check off.
    containment_threshold: float | None = Field(default=0.9, gt=0.0, le=1.0)
    # LSH layout: bands of `lsh_rows` signature values; `lsh_bands` None: as many bands as the signature holds
    # (32 at 128 permutations), `lsh_rows` None: the layout `optimal_bands` fits to the threshold. 32 x 4 makes a
    # pair at Jaccard 0.5 a candidate with p = 0.87 and at 0.6 with 0.99, so excerpts (whose Jaccard is their
    # share of the original) reach the containment check.
    lsh_rows: int | None = Field(default=4, ge=1)
    lsh_bands: int | None = Field(default=None, ge=1)
    seed: int = 1


class GateConfig(BaseModel):
    """Bounds of the Great Expectations quality gate (per-document table and batch-level figures)."""

    min_rows: int = 10
    max_reject_rate: float = 0.6
    max_duplicate_rate: float = 0.5
    # accepted rows of this batch over accepted rows of the previous accepted batch.
    min_volume_ratio: float = 0.02
    max_volume_ratio: float = 50.0
    # Jensen-Shannon divergence (base 2, so in [0, 1]) against the previous accepted batch.
    max_length_jsd: float = 0.6
    max_token_jsd: float = 0.8
    # per document: at least this share of documents must be within the filter bounds after cleaning.
    min_in_bounds_fraction: float = 0.99
    max_mean_pii_per_document: float = 5.0
    length_histogram_bins: int = 24
    token_histogram_buckets: int = 4096


class TokenizerConfig(BaseModel):
    """Byte-level BPE trained on the first dataset version."""

    vocab_size: int = 8192
    min_frequency: int = 2
    # special tokens (strings of the vocabulary).
    bos: str = "<|bos|>"
    eos: str = "<|eos|>"
    pad: str = "<|pad|>"


class DataConfig(BaseModel):
    """Data-stage thresholds and sizes; every field has a default so nothing is required."""

    # None: <workspace>/sample-source, generated on first use.
    sample_source_dir: str | None = None
    sample_days: int = 6
    # a JSONL line or a whole .txt/.md document over this size is rejected unread.
    max_line_bytes: int = 10_000_000
    parquet_text_column: str = "text"
    # worker processes for per-document work (clean, filter, PII, signatures); 1 = in-process.
    workers: int = 2
    # documents handed to the workers at once; bounds memory together with `workers`.
    chunk_docs: int = 512
    redact_pii: bool = True
    # excerpt of a rejected record kept in the quarantine artifact (characters).
    quarantine_excerpt_chars: int = 20_000
    # removal rows (why each rejected record went) kept in the metadata store per reason and batch; past it a
    # reason is kept as its count (the batch's rejects) and these first rows as samples. The quarantine file
    # keeps every rejected record. Bounds what a tiny file of a million empty records can add to the database.
    max_removals_per_reason: int = Field(1000, ge=1)
    # named filter profiles; a built-in one (`web`, `technical`) given in config is overridden field by field.
    filter_profiles: dict[str, FilterThresholds] = Field(
        default_factory=lambda: {name: make() for name, make in BUILT_IN_FILTER_PROFILES.items()}
    )
    # the profile of a source that `source_filter_profiles` does not name (`for_source` sets the one in effect).
    filter_profile: str = "web"
    # the built-in sample is reference documentation (pydoc, /usr/share/doc).
    sample_filter_profile: str = "technical"
    # source URI (or a folder / s3:// prefix of it) -> profile; the longest matching prefix wins.
    source_filter_profiles: dict[str, str] = Field(default_factory=dict)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    # tokens per training window (context + 1 for the shifted target); see the dataset format contract.
    window: int = 257
    validation_fraction: float = 0.05
    # windows per .bin shard file (257 * 65536 tokens = 33 MB as uint16).
    shard_max_windows: int = 65_536
    # documents tokenized per call; the tokenizer's working memory is proportional to it.
    encode_batch_docs: int = 256

    @field_validator("filter_profiles", mode="before")
    @classmethod
    def _over_built_in_profiles(cls, value: Any) -> Any:
        """A profile named like a built-in one starts from it: `{technical = {min_words = 20}}` changes one bound."""
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {name: make().model_dump() for name, make in BUILT_IN_FILTER_PROFILES.items()}
        for name, given in value.items():
            if isinstance(given, FilterThresholds):
                given = given.model_dump(exclude_unset=True)
            merged[name] = {**merged.get(name, {}), **given} if isinstance(given, dict) else given
        return merged

    @model_validator(mode="after")
    def _profiles_exist(self) -> "DataConfig":
        named = {"filter_profile": self.filter_profile, "sample_filter_profile": self.sample_filter_profile}
        named |= {f"source_filter_profiles[{uri!r}]": p for uri, p in self.source_filter_profiles.items()}
        for where, profile in named.items():
            if profile not in self.filter_profiles:
                raise ValueError(f"{where} names filter profile {profile!r}, which is not defined; defined: "
                                 f"{', '.join(sorted(self.filter_profiles))} (add it under data.filter_profiles)")
        return self

    @property
    def filters(self) -> FilterThresholds:
        """The thresholds of the profile in effect."""
        return self.filter_profiles[self.filter_profile]

    def profile_for(self, source_uri: str, sample_uri: str | None = None) -> str:
        """The filter profile of a source: its longest prefix in `source_filter_profiles`, else the sample's when
        it is the built-in sample, else `filter_profile`. Prefixes match whole path segments."""
        matches = [prefix for prefix in self.source_filter_profiles if _under(source_uri, prefix)]
        if matches:
            return self.source_filter_profiles[max(matches, key=len)]
        if sample_uri is not None and _under(source_uri, sample_uri):
            return self.sample_filter_profile
        return self.filter_profile

    def for_source(self, source_uri: str, sample_uri: str | None = None) -> "DataConfig":
        """This config with the source's filter profile in effect (what the ingest of that source runs with)."""
        return self.model_copy(update={"filter_profile": self.profile_for(source_uri, sample_uri)})


def _under(uri: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return uri == prefix or uri.startswith(prefix + "/")
