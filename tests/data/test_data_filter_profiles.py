"""Filter edge cases (one-line documents, flags, real bullets) and per-source filter profiles in config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lmforge_core.config.data import DataConfig, FilterThresholds, technical_filters
from tasks.quality.cleaning import clean_text
from tasks.quality.filters import bounds, failed_filters, line_scores, score_document

T = FilterThresholds()


def failures(text: str, t: FilterThresholds = T) -> list[str]:
    return failed_filters(score_document(clean_text(text), t), bounds(t))


FLAG_LINE = ("--port=N  Listen on port N instead of the default; the server binds every interface unless "
             "--host is given as well, and a port below 1024 needs the privileges of the superuser on most "
             "systems, so pick a higher one when the server runs as an ordinary user account on a shared "
             "machine, or ask the administrator to forward a low port to it with the firewall rules of the host.")


def test_a_one_line_document_starting_with_a_flag_passes_every_filter() -> None:
    assert len(FLAG_LINE.split()) >= T.min_words
    assert failures(FLAG_LINE) == []
    assert line_scores(FLAG_LINE)["bullet_line_fraction"] == 0.0


@pytest.mark.parametrize("line", ["--port=N sets it", "-v is verbose", "*args are passed on", "-1 is returned",
                                  "•no space after the bullet", "--", "- "])
def test_flags_and_bare_marks_are_not_bullets(line: str) -> None:
    assert line_scores("\n".join([line] * 3))["bullet_line_fraction"] == 0.0


@pytest.mark.parametrize("mark", ["-", "*", "•", "‣", "◦", "▪", "·", "\u2013", "\u2014"])
def test_a_bullet_character_followed_by_whitespace_is_a_bullet(mark: str) -> None:
    assert line_scores(f"{mark} one\n{mark}\ttwo\nplain three")["bullet_line_fraction"] == pytest.approx(2 / 3)


def test_a_list_of_real_bullets_is_still_rejected(make_prose) -> None:
    sentences = make_prose(4, 150).replace("\n\n", " ").split(". ")
    assert "bullet_line_fraction" in failures("\n".join("- " + s for s in sentences))


@pytest.mark.parametrize("lines", [1, 2])
def test_line_ratio_rules_do_not_fire_on_one_or_two_lines(lines: int, make_prose) -> None:
    words = make_prose(5, 120).split()
    half = " ".join(words[: len(words) // 2])
    body = "\n".join([f"- {half} ..."] * lines)  # every line a bullet, an ellipsis, and (for 2) a duplicate
    scores = score_document(clean_text(body), T)
    assert scores["line_count"] == lines
    for rule in ("bullet_line_fraction", "ellipsis_line_fraction", "dup_line_fraction", "dup_line_char_fraction"):
        assert scores[rule] == 0.0
    three = "\n".join([f"- {half} ..."] * 3)
    assert {"bullet_line_fraction", "ellipsis_line_fraction", "dup_line_fraction"} <= set(failures(three))


def test_profiles_differ_where_reference_text_repeats_itself(make_prose) -> None:
    prose = make_prose(6, 150)
    repeated_part = prose + "\n\n" + " ".join(prose.split()[:30])  # about a third of the words occur twice
    assert "dup_5gram_fraction" in failures(repeated_part, FilterThresholds())
    assert failures(repeated_part, technical_filters()) == []
    assert "dup_5gram_fraction" in failures(prose + "\n\n" + prose, technical_filters())


def test_a_source_carries_its_own_profile_and_the_longest_prefix_wins() -> None:
    cfg = DataConfig(source_filter_profiles={"s3://corpus/man": "technical", "s3://corpus/man/web-like": "web"})
    assert cfg.profile_for("s3://corpus/man/part-1.jsonl") == "technical"
    assert cfg.profile_for("s3://corpus/man/web-like/x.jsonl") == "web"
    assert cfg.profile_for("s3://corpus/manual") == "web"  # a prefix matches whole path segments
    assert cfg.profile_for("/ws/sample-source", sample_uri="/ws/sample-source") == "technical"
    chosen = cfg.for_source("s3://corpus/man")
    assert chosen.filters == technical_filters() and cfg.filters == FilterThresholds()


def test_a_profile_is_overridden_field_by_field_and_new_ones_can_be_defined() -> None:
    cfg = DataConfig(filter_profiles={"technical": {"min_words": 20}, "chat": {"min_words": 5}},
                     filter_profile="chat")
    assert cfg.filter_profiles["technical"].min_words == 20
    assert cfg.filter_profiles["technical"].max_dup_ngram_fraction == technical_filters().max_dup_ngram_fraction
    assert cfg.filter_profiles["web"] == FilterThresholds()
    assert cfg.filters.min_words == 5
    again = DataConfig.model_validate_json(cfg.model_dump_json())  # what the worker processes receive
    assert again.filter_profiles == cfg.filter_profiles and again.filters == cfg.filters


def test_an_unknown_profile_is_refused_with_its_name() -> None:
    with pytest.raises(ValidationError, match="'nope'.*defined: technical, web"):
        DataConfig(source_filter_profiles={"s3://x/y": "nope"})


def test_the_ingest_of_a_source_runs_with_that_sources_profile(data_runtime_factory, tmp_path) -> None:
    from tasks.ingest.sources import open_source
    from tasks.ingest.staging import sample_source_dir, source_config

    man = tmp_path / "corpus" / "man"
    man.mkdir(parents=True)
    rt = data_runtime_factory(source_filter_profiles={str(man): "technical"})
    # the URI the ingest sees is the source's (LocalSource resolves the folder).
    assert source_config(rt, open_source(str(man)).uri).filter_profile == "technical"
    assert source_config(rt, str(tmp_path / "corpus")).filter_profile == "web"
    sample = sample_source_dir(rt)
    sample.mkdir(parents=True)
    assert source_config(rt, open_source(str(sample)).uri).filters == technical_filters()
