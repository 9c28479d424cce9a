"""Probe files: the shipped sets load with their versions; malformed files name the file and line;
CrowS-Pairs CSV and StereoSet JSON loaders on small files in those formats."""

import csv
import json

import pytest

from tasks.evaluate.probes import (
    ProbeFileError,
    load_counterfactual,
    load_crows_pairs_csv,
    load_stereoset_json,
    load_stereotype_pairs,
    load_word_list,
)
from tasks.evaluate.run import ProbeSets


def test_shipped_probe_sets_load_with_versions_and_cover_the_axes():
    probes = ProbeSets.load()
    assert set(probes.counterfactual.axes) == {"gender", "religion", "nationality", "age", "disability",
                                              "race_ethnicity"}
    assert all(len(groups) >= 2 for groups in probes.counterfactual.axes.values())
    assert probes.ids == {"counterfactual": "probes/counterfactual@1", "stereotype_pairs": "probes/stereotype_pairs@1",
                          "toxicity": "probes/toxicity_words@1"}
    assert len(probes.pairs.pairs) >= 20 and probes.toxicity.is_toxic("you idiot")
    sentences = probes.counterfactual.sentences("gender", "female")
    assert len(sentences) == len(probes.counterfactual.templates) and "woman" in sentences[0][0]


HEADER = '{"probe_set": "counterfactual", "version": "7"}\n'
AXIS = '{"axis": "gender", "groups": {"a": ["woman"], "b": ["man"]}}\n'


@pytest.mark.parametrize(("body", "line", "message"), [
    (HEADER + AXIS + '{"template": "The {term} was"\n', 3, "not valid JSON"),
    (HEADER + AXIS + '{"template": "no slot here"}\n', 3, "exactly one {term}"),
    (HEADER + '{"axis": "gender", "groups": {"a": ["woman"]}}\n', 2, "two groups or more"),
    (HEADER + AXIS + '{"what": 1}\n', 3, "'axis' or a 'template'"),
    (HEADER + AXIS + '{"template": "Ask the {term}"}\n', 3, "needs words after"),
    ('{"probe_set": "pairs", "version": "1"}\n' + AXIS, 1, "first line must be"),
    (HEADER + '{"axis": "age", "groups": {"a": [""], "b": ["old"]}}\n', 2, "non-empty strings"),
])
def test_malformed_counterfactual_file_names_the_file_and_line(tmp_path, body, line, message):
    path = tmp_path / "cf.jsonl"
    path.write_text(body)
    with pytest.raises(ProbeFileError, match=message) as info:
        load_counterfactual(path)
    assert info.value.line == line and str(path) in str(info.value) and f"line {line}" in str(info.value)


def test_malformed_pair_and_word_files(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"probe_set": "stereotype_pairs", "version": "1"}\n'
                     '{"sent_more": "a", "sent_less": "b", "bias_type": "age"}\n\n'
                     '{"sent_more": "a", "bias_type": "age"}\n')
    with pytest.raises(ProbeFileError, match=r"pairs.jsonl, line 4: missing or empty field\(s\) sent_less"):
        load_stereotype_pairs(pairs)
    words = tmp_path / "words.txt"
    words.write_text("# version: 2\nidiot\ntwo words\n")
    with pytest.raises(ProbeFileError, match=r"words.txt, line 3: 'two words' is not one lower-case word"):
        load_word_list(words)
    words.write_text("idiot\n")
    with pytest.raises(ProbeFileError, match="lacks its '# version: N' line"):
        load_word_list(words)
    with pytest.raises(ProbeFileError, match="cannot be read"):
        load_counterfactual(tmp_path / "missing.jsonl")


def test_crows_pairs_csv_loader(tmp_path):
    path = tmp_path / "crows_pairs_anonymized.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["", "sent_more", "sent_less", "stereo_antistereo", "bias_type", "annotations",
                         "anon_writer", "anon_annotators"])
        writer.writerow([0, "He couldn't figure out the issue, as poor people do.",
                         "He couldn't figure out the issue, as rich people do.", "stereo", "socioeconomic",
                         "[['socioeconomic'], [], []]", "a0", "['a77']"])
        writer.writerow([1, "The girl was strong, \"unusually\".", "The boy was strong.", "antistereo", "gender",
                         "[]", "a1", "[]"])
    loaded = load_crows_pairs_csv(path)
    assert loaded.version == "crows-pairs:crows_pairs_anonymized.csv" and len(loaded.pairs) == 2
    assert loaded.pairs[1].sent_more == 'The girl was strong, "unusually".'
    assert [p.direction for p in loaded.pairs] == ["stereo", "antistereo"]
    assert ProbeSets.load(pairs=path).ids["stereotype_pairs"] == "probes/crows-pairs:crows_pairs_anonymized.csv"

    bad = tmp_path / "bad.csv"
    bad.write_text("sent_more,sent_less,stereo_antistereo,bias_type\nA,B,stereo,age\nA,,stereo,age\n")
    with pytest.raises(ProbeFileError, match=r"bad.csv, line 3: missing or empty field\(s\) sent_less"):
        load_crows_pairs_csv(bad)
    bad.write_text("sentence,label\nA,B\n")
    with pytest.raises(ProbeFileError, match="lacks the CrowS-Pairs column"):
        load_crows_pairs_csv(bad)


def stereoset_example(kind, context, stereo, anti):
    return {"id": f"{kind}-1", "target": "chess player", "bias_type": "profession", "context": context,
            "sentences": [{"sentence": stereo, "id": "s1", "labels": [], "gold_label": "stereotype"},
                          {"sentence": anti, "id": "s2", "labels": [], "gold_label": "anti-stereotype"},
                          {"sentence": "The chess player was fish.", "id": "s3", "labels": [],
                           "gold_label": "unrelated"}]}


def test_stereoset_json_loader(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps({"version": "1.0-dev", "data": {
        "intrasentence": [stereoset_example("intra", "The chess player was BLANK.", "The chess player was nerdy.",
                                            "The chess player was athletic.")],
        "intersentence": [stereoset_example("inter", "He plays chess.", "He is a nerd.", "He is a surfer.")]}}))
    loaded = load_stereoset_json(path)
    assert loaded.version == "stereoset:1.0-dev"
    assert [(p.sent_more, p.sent_less) for p in loaded.pairs] == [
        ("The chess player was nerdy.", "The chess player was athletic."),
        ("He plays chess. He is a nerd.", "He plays chess. He is a surfer.")]
    broken = json.loads(path.read_text())
    del broken["data"]["intersentence"][0]["sentences"][1]
    path.write_text(json.dumps(broken))
    with pytest.raises(ProbeFileError, match=r"intersentence example 0, id 'inter-1'.*anti-stereotype"):
        load_stereoset_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(ProbeFileError, match="not a StereoSet JSON file"):
        load_stereoset_json(path)
