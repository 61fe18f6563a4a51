"""Weak labels for the question task: spaCy rule matchers over real comments.

No large labelled set of social-media questions exists, so the question head learns from rules that
an SMM manager would write (a question mark on an interrogative clause, a request such as "can you",
"please help", "DM me"), applied to real unlabelled comments. The rules vote; the learned model
generalises beyond their exact words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

import pandas as pd
import spacy
from spacy.language import Language
from spacy.matcher import Matcher

from model.tasks import LABELS, Task
from model.text import normalize

WH_WORDS = ("what", "when", "where", "why", "how", "who", "which", "whats", "wheres", "hows")
AUXILIARIES = (
    "can", "could", "would", "will", "is", "are", "do", "does", "did", "should", "may",
    "have", "has", "any", "anyone", "am", "was", "were", "shall", "isnt", "arent", "dont",
)  # fmt: skip
REQUEST_PATTERNS: dict[str, list[list[dict[str, object]]]] = {
    "can_you": [
        [{"LOWER": {"IN": ["can", "could", "would", "will"]}}, {"LOWER": {"IN": ["you", "u", "someone", "somebody", "anyone"]}}],
    ],
    "please_act": [
        [{"LOWER": {"IN": ["please", "pls", "plz", "plse", "kindly"]}}, {"POS": "VERB", "OP": "?"}, {"LOWER": {"IN": ["help", "fix", "check", "advise", "respond", "reply", "assist", "contact", "call", "look", "send", "dm", "follow", "let", "refund", "explain", "sort", "update", "tell", "get", "give", "confirm", "resolve", "cancel", "email", "escalate", "answer", "provide", "share"]}}],
    ],
    "how_do_i": [
        [{"LOWER": {"IN": ["how", "where", "what", "who", "when"]}}, {"LOWER": {"IN": ["do", "can", "should", "would", "does"]}}, {"LOWER": {"IN": ["i", "we", "you", "u", "one"]}}],
    ],
    "dm": [
        [{"LOWER": {"IN": ["dm", "dms", "dmed", "dm'd", "messaged", "pm"]}}, {"LOWER": {"IN": ["me", "us", "sent", "you", "'d"]}}],
        [{"LOWER": {"IN": ["check", "see", "read"]}}, {"LOWER": {"IN": ["your", "ur", "my", "the"]}, "OP": "?"}, {"LOWER": {"IN": ["dm", "dms", "inbox", "messages", "pm", "email"]}}],
        [{"LOWER": {"IN": ["sent", "send"]}}, {"LOWER": {"IN": ["you", "u"]}, "OP": "?"}, {"LOWER": {"IN": ["a", "the"]}, "OP": "?"}, {"LOWER": {"IN": ["dm", "pm", "message"]}}],
    ],
    "need_help": [
        [{"LOWER": {"IN": ["need", "needs", "want", "require"]}}, {"IS_ALPHA": True, "OP": "?"}, {"LOWER": {"IN": ["help", "assistance", "refund", "support", "answer", "response", "replacement", "update"]}}],
        [{"LOWER": {"IN": ["help", "assist"]}}, {"LOWER": {"IN": ["me", "us", "please", "pls", "plz"]}}],
        [{"LOWER": {"IN": ["let"]}}, {"LOWER": {"IN": ["me", "us"]}}, {"LOWER": "know"}],
        [{"LOWER": {"IN": ["any", "an"]}}, {"LOWER": {"IN": ["update", "updates", "news", "idea", "ideas", "eta", "info", "help", "suggestions"]}}],
        [{"LOWER": {"IN": ["fix", "sort", "look"]}}, {"LOWER": {"IN": ["this", "it", "that", "into", "out"]}}],
        [{"LOWER": {"IN": ["little", "some"]}}, {"LOWER": "help"}],
    ],
}  # fmt: skip
RHETORICAL = re.compile(
    r"\b(are you (kidding|serious|joking)|seriously\?|really\?|wtf|why (is|are|does|do) (your|you)\b.*"
    r"\b(always|so|never|even)\b)",
    re.IGNORECASE,
)
GRATITUDE_ONLY = re.compile(
    r"^\W*(@user\W*)*(thank(s| you)|thx|ty|cheers|great|awesome|love)\b[^?]*$", re.IGNORECASE
)


@lru_cache(maxsize=1)
def _pipeline() -> tuple[Language, Matcher]:
    # A blank English pipeline: tokenizer and rule matcher only, nothing to download.
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    matcher = Matcher(nlp.vocab)
    for name, patterns in REQUEST_PATTERNS.items():
        usable = [[{k: v for k, v in tok.items() if k != "POS"} for tok in p] for p in patterns]
        matcher.add(name, usable)
    return nlp, matcher


def _interrogative_clause(sentence: Sequence[str]) -> bool:
    words = [w.lower() for w in sentence if w.isalpha() or "'" in w]
    words = [
        w
        for w in words
        if w
        not in (
            "user",
            "http",
            "hi",
            "hey",
            "hello",
            "so",
            "and",
            "but",
            "ok",
            "also",
            "then",
            "please",
            "pls",
        )
    ]
    return bool(words) and (words[0] in WH_WORDS or words[0] in AUXILIARIES)


def weak_question_label(text: str) -> int | None:
    """1 = asks the brand for something, 0 = does not, None = the rules abstain."""
    nlp, matcher = _pipeline()
    doc = nlp(normalize(text))
    if matcher(doc):
        return 1
    for sentence in doc.sents:
        tokens = [t.text for t in sentence]
        if "?" in sentence.text and _interrogative_clause(tokens):
            return 0 if RHETORICAL.search(sentence.text) else 1
    if GRATITUDE_ONLY.search(doc.text) or "?" not in doc.text:
        return 0
    return None


def weak_question_examples(texts: Iterable[str], source: str) -> pd.DataFrame:
    """Training rows for the question task from the rules' votes (abstentions dropped)."""
    names = LABELS[Task.QUESTION]
    rows = []
    for text in texts:
        label = weak_question_label(text)
        if label is not None:
            rows.append((text, Task.QUESTION.value, names[label], "train", source))
    return pd.DataFrame(rows, columns=["text", "task", "label", "split", "source"])
