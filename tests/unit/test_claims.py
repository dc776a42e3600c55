"""The claim text and key: what counts as the same claim said again, rule by rule."""

from __future__ import annotations

import pytest

from worker.retrieval.claims import claim_key, claim_text

ORIGINAL = "Bill Gates wants to put microchips in the COVID-19 vaccine"


@pytest.mark.parametrize(
    "copy",
    [
        ORIGINAL,
        f"RT @someone: {ORIGINAL}",
        f"rt @a_b RT @c: {ORIGINAL}",
        f"{ORIGINAL} https://t.co/AbC123xyz",
        f"{ORIGINAL} http://example.com/a?b=c pic.twitter.com/xyz",
        f"{ORIGINAL} www.example.org/page",
        f"  {ORIGINAL}\n\n",
        f"{ORIGINAL} \U0001f631\U0001f631",
        f"\u2757\ufe0f {ORIGINAL} \U0001f44d\U0001f3fd",
        f"{ORIGINAL}\u200b",
        "Ｂｉｌｌ Gates wants to put microchips in the COVID-19 vaccine",  # full-width letters (NFKC)
    ],
)
def test_repeats_of_one_claim_share_its_key(copy: str) -> None:
    assert claim_key(copy) == claim_key(ORIGINAL)
    assert claim_text(copy) == ORIGINAL


def test_a_mention_keeps_its_name_and_case_is_kept() -> None:
    assert claim_text(f"@WHO says {ORIGINAL}") == f"WHO says {ORIGINAL}"
    assert claim_key(f"@alice {ORIGINAL}") != claim_key(f"@bob {ORIGINAL}")
    assert claim_key(ORIGINAL.upper()) != claim_key(ORIGINAL)  # grouped by the clusters, not the key


@pytest.mark.parametrize(
    "other",
    [
        "Bill Gates wants to put microchips in the flu vaccine",
        "Bill Gates does not want to put microchips in the COVID-19 vaccine",
        "Bill Gates wants to put microchip in the COVID-19 vaccine",  # a typo: for the clusters, not the key
    ],
)
def test_a_different_wording_is_a_different_key(other: str) -> None:
    assert claim_key(other) != claim_key(ORIGINAL)


def test_an_email_address_and_a_temperature_are_kept() -> None:
    assert claim_text("write to a@b.org now") == "write to a@b.org now"
    assert claim_text("it was 40°C in Paris") == "it was 40°C in Paris"


def test_a_post_of_only_links_or_emoji_is_never_empty() -> None:
    assert claim_text("https://t.co/x") == "https://t.co/x"
    assert claim_text("\U0001f631 \U0001f631") == "\U0001f631 \U0001f631"
    assert claim_key("https://t.co/x") != claim_key("https://t.co/y")


def test_the_key_is_short_and_stable() -> None:
    key = claim_key(ORIGINAL)
    assert len(key) == 32 and int(key, 16) >= 0
    assert key == claim_key(ORIGINAL)
