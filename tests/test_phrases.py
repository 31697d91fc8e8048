"""vsl_ext.phrases: scene-graph labels against hand-labelled captions (per-kind precision/recall
above floors), specific rules, argument checks and the parse cache (stale, corrupt, foreign files)."""
import json
import os
import warnings

import pytest

from phrases_gold import FLOORS, GOLD, gold_scores, scores
from vsl_ext import phrases
from vsl_ext.phrases import PhraseLabels


def _model_or_skip():
    try:
        return phrases.load_model()
    except ImportError as exc:
        pytest.skip(f"spaCy or its English model is not installed ({exc})")


needs_model = pytest.mark.usefixtures("model")


@pytest.fixture(scope="module")
def model():
    return _model_or_skip()


@needs_model
def test_gold_precision_recall():
    got = phrases.parse([g[0] for g in GOLD])
    assert len(GOLD) >= 30 and len(got) == len(GOLD)
    report = {kind: (round(p, 3), round(r, 3)) for kind, (p, r) in gold_scores(got).items()}
    print("precision/recall per kind:", report)
    for kind, (pmin, rmin) in FLOORS.items():
        p, r = report[kind]
        assert p >= pmin and r >= rmin, (kind, report)


def test_scores_helper():
    assert scores([{1, 2}, {3}], [{1}, {3, 4}]) == (2 / 3, 2 / 3)
    assert scores([set()], [set()]) == (0.0, 0.0)


@needs_model
def test_word_order_changes_triples_not_entities():
    a, b = phrases.parse(["a dog chasing a cat", "a cat chasing a dog"])
    assert set(a.entities) == set(b.entities) == {"dog", "cat"}
    assert a.triples == (("dog", "chase", "cat"),) and b.triples == (("cat", "chase", "dog"),)


@needs_model
def test_numerals_are_not_attributes_and_kinds_are_deduplicated():
    (lab,) = phrases.parse(["Two brown dogs and three brown dogs on 2 red couches"])
    assert not any(m in ("two", "three", "2") for _, m in lab.attributes)
    assert ("dog", "brown") in lab.attributes and len(set(lab.attributes)) == len(lab.attributes)
    assert lab.entities.count("dog") == 1


@needs_model
def test_lemmas_of_silent_e_verbs():
    # en_core_web_sm lemmatizes "riding" as "rid"; the rules restore "ride" (and keep "ridding" alone)
    labs = phrases.parse(["a man riding a horse", "a girl staring at a cake", "a man sitting on a bench"])
    assert [t[1] for lab in labs for t in lab.triples] == ["ride", "stare at", "sit on"]


@needs_model
def test_labels_strings_and_empty_input():
    assert phrases.parse([]) == []
    (lab,) = phrases.parse(["a cat sleeping on a wooden bench"])
    assert lab.labels() == ("entity\tcat", "entity\tbench", "attribute\tbench\twooden",
                            "triple\tcat\tsleep on\tbench")
    (empty,) = phrases.parse([""])
    assert empty == PhraseLabels()


@needs_model
def test_odd_input_gives_clean_fields():
    odd = ["", "   ", "\t\n", "a dog\ton\ta mat", "a\u00a0cat  on\n\na  mat", "🐶 chasing 🐱", "A" * 5000,
           "a dog " * 200, "l'été à Paris", "A dog -- on ... the  ,, couch !!"]
    for lab in phrases.parse(odd):
        fields = list(lab.entities) + [f for item in lab.attributes + lab.triples for f in item]
        assert all(f and f == " ".join(f.split()) for f in fields), lab
        assert len(set(lab.triples)) == len(lab.triples)


@needs_model
def test_parser_info_and_model_choice():
    info = phrases.parser_info()
    assert info["rules"] == phrases.RULES_VERSION
    assert info["model"] in phrases.MODEL_PACKAGES
    assert info["spacy"] and info["model_version"]


@needs_model
def test_two_processes_give_the_same_labels():
    caps = [g[0] for g in GOLD] * 3
    assert phrases.parse(caps, n_process=2, batch_size=16) == phrases.parse(caps, n_process=1)


@pytest.mark.parametrize("kw, match", [({"batch_size": 0}, "batch_size"), ({"n_process": True}, "n_process"),
                                       ({"n_process": 0}, "n_process")])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        phrases.parse(["a cat"], **kw)


@pytest.mark.parametrize("captions", ["a cat", None, ["a cat", 3]])
def test_bad_captions(captions):
    with pytest.raises(TypeError, match="captions"):
        phrases.parse(captions)


def test_missing_model_names_the_install_command(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_models(name, *a, **k):
        if name.startswith("en_core_web_sm"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_models)
    monkeypatch.setattr(phrases.importlib, "import_module", lambda n: no_models(n))
    phrases.load_model.cache_clear()
    try:
        with pytest.raises(ImportError, match=r'pip install "vsl_ext\[phrases\]"'):
            phrases.load_model()
    finally:
        phrases.load_model.cache_clear()


# ------------------------------------------------------------------------------------------- cache
FAKE = {"spacy": "0.0", "model": "fake", "model_version": "1", "rules": phrases.RULES_VERSION}


@pytest.fixture
def fake_parser(monkeypatch):
    """parse() without spaCy: a stand-in parser that labels each caption by its words, counting calls."""
    calls = []

    def fake(captions, batch_size, n_process):
        calls.append(len(captions))
        return [PhraseLabels(tuple(c.split()), (), ()) for c in captions]

    monkeypatch.setattr(phrases, "_parse_uncached", fake)
    monkeypatch.setattr(phrases, "parser_info", lambda: dict(FAKE))
    return calls


def test_cache_round_trip(tmp_path, fake_parser):
    path = tmp_path / "caps.phrases"
    caps = ["a dog", "a cat on a mat", "ünïcode ça", ""]
    first = phrases.parse(caps, cache=path)
    assert fake_parser == [4] and os.listdir(tmp_path) == ["caps.phrases"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = phrases.parse(caps, cache=str(path))
    assert again == first and fake_parser == [4]  # read, not parsed


def test_cache_is_rebuilt_for_other_captions_or_versions(tmp_path, fake_parser, monkeypatch):
    path = tmp_path / "c"
    phrases.parse(["a dog"], cache=path)
    with pytest.warns(RuntimeWarning, match="captions"):
        assert phrases.parse(["a cat"], cache=path) == [PhraseLabels(("a", "cat"))]
    monkeypatch.setattr(phrases, "parser_info", lambda: dict(FAKE, model_version="2"))
    with pytest.warns(RuntimeWarning, match="model_version"):
        phrases.parse(["a cat"], cache=path)
    assert fake_parser == [1, 1, 1]
    phrases.parse(["a cat"], cache=path)
    assert fake_parser == [1, 1, 1]


def test_corrupt_cache_is_rebuilt(tmp_path, fake_parser):
    path = tmp_path / "c"
    phrases.parse(["a dog", "a cat"], cache=path)
    raw = path.read_bytes()
    i = raw.index(b"dog")
    path.write_bytes(raw[:i] + b"dig" + raw[i + 3:])
    with pytest.warns(RuntimeWarning, match="corrupt"):
        assert phrases.parse(["a dog", "a cat"], cache=path)[0].entities == ("a", "dog")
    path.write_bytes(raw[:-10])
    with pytest.warns(RuntimeWarning, match="corrupt"):
        phrases.parse(["a dog", "a cat"], cache=path)
    assert fake_parser == [2, 2, 2]
    header = json.loads(path.read_bytes().split(b"\n", 1)[0])
    assert header["format"] == "vsl_ext.phrases.cache" and header["key"]["count"] == 2


@pytest.mark.parametrize("content", [b"", b"hello\n", b"\x00\xff\xfe", b'{"format": "something else"}\n{}'])
def test_foreign_file_is_rejected_and_left_alone(tmp_path, fake_parser, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a vsl_ext phrase-label cache"):
        phrases.parse(["a dog"], cache=path)
    assert path.read_bytes() == content and fake_parser == []
