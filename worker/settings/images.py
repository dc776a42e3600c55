"""Posts' and fact-checks' images, matched by PDQ hash.

One group of the fields of :class:`worker.settings.Settings` (its environment variables keep the
``FACTMATCH_`` prefix and the field's name; the group only says where a setting belongs).
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, Field, field_validator


class ImageSettings(BaseModel):
    """Posts' and fact-checks' images, matched by PDQ hash."""

    images: bool = Field(
        True, description="Read the images posts and fact-checks carry and match them by perceptual hash (PDQ)."
    )
    image_max_per_post: int = Field(
        4, ge=1, le=32, description="Images read per post or fact-check; the rest are listed as skipped."
    )
    image_max_bytes: int = Field(
        10 * 1024 * 1024, ge=1_024, le=100 * 1024 * 1024, description="Largest image fetched or taken inline."
    )
    image_max_pixels: int = Field(
        40_000_000,
        ge=10_000,
        le=500_000_000,
        description="Largest image decoded (a decompression bomb is refused before).",
    )
    image_fetch_timeout_s: float = Field(
        5.0, gt=0, le=60, description="Longest one image's fetch takes, redirects included."
    )
    image_connect_timeout_s: float = Field(2.0, gt=0, le=30)
    image_max_redirects: int = Field(3, ge=0, le=10)
    image_batch_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Longest a batch waits for its images; later ones are reported as timeout."
    )
    image_fetch_concurrency: int = Field(8, ge=1, le=256, description="Images fetched at once by one worker.")
    image_allow_networks: str = Field(
        "",
        description="Comma-separated CIDRs images may be fetched from although not public (a platform's CDN inside"
        " a private network). By default only global addresses: loopback, private, link-local (the metadata"
        " service) and the like are refused, after DNS and on every redirect.",
    )
    image_hosts: str = Field(
        "", description="Comma-separated host names (and their subdomains) that alone may be fetched; empty: any host."
    )
    image_ocr: Literal["auto", "tesseract", "off"] = Field(
        "auto",
        description="Read the text in posts' images with Tesseract (auto: when it is installed, logged either way;"
        " tesseract: refuse to start without it) and search it as a query of its own.",
    )
    image_ocr_langs: str = Field(
        "eng+spa+fra+deu+por",
        pattern=r"^[a-z_]{3,12}(\+[a-z_]{3,12})*$",
        description="Tesseract's languages for image text, '+'-joined (each needs its data: tesseract-ocr-<lang>).",
    )
    image_ocr_timeout_s: float = Field(10.0, gt=0, le=120, description="Longest OCR of one image.")
    calibrate_read_text: bool = Field(
        False,
        description="When a version is calibrated (factmatch calibrate, the trainer), also fit its decision model for"
        " text read in images: each labelled post rendered as a meme and read by this OCR (about 0.35 CPU-s a post)."
        " Off: such a version decides read text with its typed model (sure of less of it).",
    )
    image_ocr_min_confidence: float = Field(
        60.0, ge=0, le=100, description="Words read with a lower confidence (0-100) are left out of an image's text."
    )
    image_match_distance: int = Field(
        31,
        ge=0,
        le=128,
        description="PDQ Hamming distance (of 256 bits) at or below which a post's image is a fact-check's picture"
        " (hasher-matcher-actioner's default).",
    )
    image_match_keypoints: int = Field(
        20,
        ge=0,
        le=500,
        description="Keypoints of a fact-check's image that must be found in place in a post's image for a copy"
        " PDQ missed (cropped) to be the same picture; 0 turns this search off (PDQ alone).",
    )
    image_words_cut: float = Field(
        0.35,
        ge=0,
        le=1,
        description="A post's image found the same picture as a fact-check's is not a match when both carry words"
        " and they share less than this (character trigrams of the shorter text): another claim on a reused"
        " picture, such as a meme template. 0: the picture alone decides.",
    )

    @field_validator("image_allow_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for part in (p.strip() for p in value.split(",")):
            if part:
                try:
                    ipaddress.ip_network(part, strict=False)
                except ValueError as exc:
                    raise ValueError(f"image_allow_networks: {part!r} is not a network (CIDR)") from exc
        return value
