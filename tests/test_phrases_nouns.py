"""vsl_ext.phrases object names: a noun's name is its singular whatever en_core_web_sm's lemmatizer
says (vases -> "vas", cookies -> "cooky"), a compound noun is named whole ("fire hydrant", "teddy
bear") even when the tagger splits it, and a participle is not part of an entity ("a giraffe
grazing"). The right names come from the hand-written word list below, not from the code."""
import pytest

from vsl_ext import phrases


@pytest.fixture(scope="module", autouse=True)
def model():
    try:
        return phrases.load_model()
    except ImportError as exc:
        pytest.skip(f"spaCy, its English model or inflect is not installed ({exc})")


# (singular, plural): COCO's 80 object classes in the words captions use, then irregular plurals and
# the lemmatizer's traps. Left out, as known failures (docs/phrases.md): "hot dog" and "potted plant",
# whose first word is an adjective (an attribute), and "glasses", a plural-only noun alone.
PAIRS = [
    ("person", "persons"), ("man", "men"), ("woman", "women"), ("child", "children"), ("bicycle", "bicycles"),
    ("car", "cars"), ("motorcycle", "motorcycles"), ("airplane", "airplanes"), ("bus", "buses"),
    ("train", "trains"), ("truck", "trucks"), ("boat", "boats"), ("traffic light", "traffic lights"),
    ("fire hydrant", "fire hydrants"), ("stop sign", "stop signs"), ("parking meter", "parking meters"),
    ("bench", "benches"), ("bird", "birds"), ("cat", "cats"), ("dog", "dogs"), ("horse", "horses"),
    ("sheep", "sheep"), ("cow", "cows"), ("elephant", "elephants"), ("bear", "bears"), ("zebra", "zebras"),
    ("giraffe", "giraffes"), ("backpack", "backpacks"), ("umbrella", "umbrellas"), ("handbag", "handbags"),
    ("tie", "ties"), ("suitcase", "suitcases"), ("frisbee", "frisbees"), ("ski", "skis"),
    ("snowboard", "snowboards"), ("kite", "kites"), ("baseball bat", "baseball bats"),
    ("baseball glove", "baseball gloves"), ("skateboard", "skateboards"), ("surfboard", "surfboards"),
    ("tennis racket", "tennis rackets"), ("bottle", "bottles"), ("wine glass", "wine glasses"), ("cup", "cups"),
    ("fork", "forks"), ("knife", "knives"), ("spoon", "spoons"), ("bowl", "bowls"), ("banana", "bananas"),
    ("apple", "apples"), ("sandwich", "sandwiches"), ("orange", "oranges"), ("carrot", "carrots"),
    ("pizza", "pizzas"), ("donut", "donuts"), ("cake", "cakes"), ("chair", "chairs"), ("couch", "couches"),
    ("bed", "beds"), ("dining table", "dining tables"), ("toilet", "toilets"), ("laptop", "laptops"),
    ("mouse", "mice"), ("remote", "remotes"), ("keyboard", "keyboards"), ("cell phone", "cell phones"),
    ("microwave", "microwaves"), ("oven", "ovens"), ("toaster", "toasters"), ("sink", "sinks"),
    ("refrigerator", "refrigerators"), ("book", "books"), ("clock", "clocks"), ("vase", "vases"),
    ("scissors", "scissors"), ("teddy bear", "teddy bears"), ("hair drier", "hair driers"),
    ("toothbrush", "toothbrushes"), ("sports ball", "sports balls"),
    # irregular plurals and the lemmatizer's traps (vases -> "vas", cookies -> "cooky", axes -> "axis")
    ("cookie", "cookies"), ("axe", "axes"), ("tax", "taxes"), ("smoothie", "smoothies"), ("beanie", "beanies"),
    ("ox", "oxen"), ("goose", "geese"), ("hippo", "hippos"), ("foot", "feet"), ("tooth", "teeth"),
    ("leaf", "leaves"), ("shelf", "shelves"), ("wolf", "wolves"), ("calf", "calves"), ("loaf", "loaves"),
    ("potato", "potatoes"), ("tomato", "tomatoes"), ("box", "boxes"), ("dish", "dishes"), ("brownie", "brownies"),
    ("puppy", "puppies"), ("strawberry", "strawberries"), ("pony", "ponies"), ("cherry", "cherries"),
    ("fish", "fish"), ("deer", "deer"), ("cactus", "cacti"), ("photo", "photos"), ("piano", "pianos"),
    ("kiwi", "kiwis"), ("lens", "lenses"), ("church", "churches"), ("bunny", "bunnies"), ("pie", "pies"),
    ("wife", "wives"),
]


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def _captions(singular, plural):
    return [f"{_article(singular)} {singular} on the ground", f"two {plural} on the ground",
            f"there are some {plural} next to a wall", f"a man standing near the {plural}"]


def test_singular_and_plural_captions_name_the_same_object():
    captions = [c for s, p in PAIRS for c in _captions(s, p)]
    labels = phrases.parse(captions, n_process=1)
    missed = [(c, lab.entities) for (s, _), k in zip(PAIRS, range(0, len(captions), 4))
              for c, lab in zip(captions[k:k + 4], labels[k:k + 4]) if s not in lab.entities]
    assert not missed, missed


@pytest.mark.parametrize("caption, entity", [
    ("three vases on a shelf", "vase"), ("a plate of cookies", "cookie"), ("two axes on a log", "axe"),
    ("a pile of taxes on a desk", "tax"), ("two smoothies on a table", "smoothie"),
    ("two men wearing beanies", "beanie"), ("oxen pulling a cart", "ox"), ("two geese swimming in a pond", "goose"),
    ("hippos in the water", "hippo"),
])
def test_the_lemmatizers_plural_errors_are_fixed(caption, entity):
    (lab,) = phrases.parse([caption], n_process=1)
    assert entity in lab.entities, lab
    wrong = {"vas", "cooky", "axis", "taxis", "smoothy", "beany", "oxen", "geese", "hippos"}
    assert not wrong & set(lab.entities), lab


@pytest.mark.parametrize("caption, entities, triples", [
    # docs/phrases.md's examples of compound names
    ("a fire hydrant next to a car", ("fire hydrant", "car"), (("fire hydrant", "next to", "car"),)),
    ("a teddy bear on a bed", ("teddy bear", "bed"), (("teddy bear", "on", "bed"),)),
    ("a man holding a tennis racket", ("man", "tennis racket"), (("man", "hold", "tennis racket"),)),
    ("two teddy bears sitting on a couch", ("teddy bear", "couch"), (("teddy bear", "sit on", "couch"),)),
    ("a stop sign on a pole", ("stop sign", "pole"), (("stop sign", "on", "pole"),)),
    ("a living room with a couch", ("living room", "couch"), (("living room", "with", "couch"),)),
    ("a cat next to two wine glasses", ("cat", "wine glass"), (("cat", "next to", "wine glass"),)),
    ("an office building with a clock", ("office building", "clock"), (("office building", "with", "clock"),)),
])
def test_compound_nouns_are_named_whole(caption, entities, triples):
    (lab,) = phrases.parse([caption], n_process=1)
    assert lab.entities == entities and lab.triples == triples, lab


def test_colour_and_material_compounds_stay_attributes():
    (lab,) = phrases.parse(["a brick building next to a red fire hydrant"], n_process=1)
    assert lab.entities == ("building", "fire hydrant")
    assert set(lab.attributes) == {("building", "brick"), ("fire hydrant", "red")}


@pytest.mark.parametrize("caption, entities, triples", [
    ("a giraffe grazing from a tree", ("giraffe", "tree"), (("giraffe", "graze from", "tree"),)),
    ("a cow grazing in a field", ("cow", "field"), (("cow", "graze in", "field"),)),
    ("a zebra grazing", ("zebra",), ()),
    ("a man surfing on a wave", ("man", "wave"), (("man", "surf on", "wave"),)),
])
def test_participles_are_not_part_of_an_entity(caption, entities, triples):
    (lab,) = phrases.parse([caption], n_process=1)
    assert lab.entities == entities and lab.triples == triples, lab


def test_plural_only_nouns_keep_their_form():
    (lab,) = phrases.parse(["a woman in sunglasses and jeans holding scissors"], n_process=1)
    assert {"sunglasses", "jeans", "scissors"} <= set(lab.entities), lab
    (lab,) = phrases.parse(["a man wearing sun glasses"], n_process=1)
    assert "sun glasses" in lab.entities, lab


def test_parser_info_records_inflect_and_the_rules_version():
    info = phrases.parser_info()
    assert info["rules"] == phrases.RULES_VERSION >= 2 and info["inflect"]


def test_a_cache_of_rules_version_1_is_rebuilt(tmp_path, monkeypatch):
    """Caches written before the noun rules (no inflect in the key, rules 1) are parsed again."""
    calls = []

    def fake(captions, batch_size, n_process):
        calls.append(len(captions))
        return [phrases.PhraseLabels((c,)) for c in captions]

    old = {"spacy": "3.8.18", "model": "en_core_web_sm", "model_version": "3.8.0", "rules": 1}
    monkeypatch.setattr(phrases, "_parse_uncached", fake)
    monkeypatch.setattr(phrases, "parser_info", lambda: dict(old))
    phrases.parse(["three vases"], cache=tmp_path / "c")
    monkeypatch.setattr(phrases, "parser_info", lambda: dict(old, inflect="7.6.0", rules=phrases.RULES_VERSION))
    with pytest.warns(RuntimeWarning, match="other rules, inflect"):
        phrases.parse(["three vases"], cache=tmp_path / "c")
    assert calls == [1, 1]


def test_missing_inflect_names_the_install_command(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_inflect(name, *a, **k):
        if name == "inflect":
            raise ImportError("No module named 'inflect'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_inflect)
    with pytest.raises(ImportError, match=r'inflect package .*pip install "vsl_ext\[phrases\]"'):
        phrases._inflect_engine()
