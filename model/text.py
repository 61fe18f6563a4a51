"""The one text normalisation used by training, evaluation and serving, so they see the same input."""

from __future__ import annotations

import html
import re
import unicodedata

_UNICODE_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w+")
# Zero-width and bidi control characters change nothing a reader sees but split tokens.
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u202a-\u202e\u2066-\u2069]")
_SPACE = re.compile(r"\s+")
# Half of a UTF-16 pair without its other half (a cut emoji, or a "\ud83d" escape in JSON): not
# valid Unicode, and tokenizers and UTF-8 encoders refuse it.
UNPAIRED_SURROGATE = re.compile("[\ud800-\udfff]")
_NON_WORD = re.compile(r"[\W_]+")


def _decode_escapes(text: str) -> str:
    # Some corpora store tweets with literal "\u2019" escapes; decode them so copies match.
    return _UNICODE_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def normalize(text: str) -> str:
    """Canonical form of a comment: decoded escapes and entities, NFKC, @user and http placeholders.

    Follows the TweetEval convention (user mentions -> "@user", links -> "http") so models trained on
    tweets see brand comments the same way. Case is kept: capitals carry tone.
    """
    text = html.unescape(html.unescape(_decode_escapes(text)))
    text = UNPAIRED_SURROGATE.sub("\ufffd", text)
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text)
    text = _URL.sub("http", text)
    text = _MENTION.sub("@user", text)
    return _SPACE.sub(" ", text).strip()


def dedup_key(text: str) -> str:
    """A loose key for finding the same tweet in two corpora whose formatting differs.

    Lowercased, without mentions, links, the retweet marker, punctuation and spacing: the copies of a
    tweet in SemEval and TweetEval differ in exactly those.
    """
    text = normalize(text).lower()
    text = text.replace("@user", " ").replace("http", " ")
    text = re.sub(r"^rt\b", " ", text)
    return _NON_WORD.sub("", text)
