"""What of a post's text a claim is: the text every encoder and search sees, and the key of a repeat.

A stream repeats its claims: retweets, copies with a link changed, an emoji added, spacing
changed. None of that changes which fact-check verifies or debunks the post, so the worker
encodes and searches the post's *claim text* (:func:`claim_text`) rather than its raw text, and
posts whose claim texts are equal are the same claim said again: the worker answers them once
(:mod:`worker.core.reuse`). Evaluation, calibration and shadow scoring use the same text, so the
decision model is fitted on what it is served, and a reused answer is exactly the answer the post
would have got (the key is the encoder's input, nothing coarser).

The rules, in order (each one a regular expression below, tested in ``tests/unit/test_claims.py``):

1. Unicode NFKC (full-width letters, ligatures, compatibility forms fold to their plain form).
2. Retweet prefixes ``RT @name:`` (repeated, any case) are removed.
3. Links (``http(s)://...``, ``www....``, ``pic.twitter.com/...``, ``t.co/...``) are removed.
4. A mention's ``@`` is dropped and its name kept (``@WHO`` -> ``WHO``): who is named is content.
5. Emoji and their variants (pictographs, dingbats, flags, skin-tone modifiers, variation
   selectors, zero-width joiners and other invisible characters) are removed.
6. Runs of whitespace become one space.

Case is kept, and so is a mention's name: folding case cost the default (cased) model 1.1 points
of dense MAP@5 on CheckThat! dev, replacing names with ``@user`` 0.8 (docs/measurements.md), so
copies that differ only there are grouped by the claim clusters (their vectors), not by this key.
On the same data these rules gain 0.8 points over the raw text (0.813 -> 0.820).

A post that is nothing but links or emoji keeps its NFKC, whitespace-collapsed text,
so nothing is ever encoded empty.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

RETWEET = re.compile(r"^(?:\s*rt\s*@\w+\s*:?\s*)+", re.IGNORECASE)
LINK = re.compile(r"(?:https?://|www\.|pic\.twitter\.com/|\bt\.co/)\S*", re.IGNORECASE)
MENTION = re.compile(r"(?<![\w@])@\w+")
EMOJI = re.compile(
    "["
    "\U0001f000-\U0001faff"  # pictographs, emoticons, transport, flags, skin tones, symbols
    "\u2600-\u27bf"  # miscellaneous symbols and dingbats
    "\u2b00-\u2bff"  # arrows and stars used as emoji
    "\ufe00-\ufe0f"  # variation selectors
    "\u200b-\u200f\u2060\ufeff"  # zero-width spaces and joiners, marks, word joiner, BOM
    "\U000e0020-\U000e007f"  # tag characters (subdivision flags)
    "]+"
)
SPACES = re.compile(r"\s+")


def claim_text(text: str) -> str:
    """The post's text as the worker encodes and searches it (the rules above)."""
    plain = unicodedata.normalize("NFKC", text)
    claim = RETWEET.sub("", plain)
    claim = LINK.sub(" ", claim)
    claim = MENTION.sub(lambda m: m.group(0)[1:], claim)
    claim = EMOJI.sub(" ", claim)
    claim = SPACES.sub(" ", claim).strip()
    return claim or SPACES.sub(" ", plain).strip()


def claim_key(text: str) -> str:
    """A short, stable digest of :func:`claim_text`: equal for posts that are the same claim said again."""
    return hashlib.sha256(claim_text(text).encode("utf-8")).hexdigest()[:32]
