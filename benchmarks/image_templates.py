"""One picture, many captions: how often a meme template with another claim on it is "the same
picture" as a fact-check's meme, and what the words guard (``worker/images/words.py``) keeps.

``--templates`` generated photos (``benchmarks/images.py``'s) each carry a CheckThat! 2020
fact-check's claim (``../shared/data``) in one of two layouts: the classic meme (white words with
a black outline at the top and bottom of the photo) or a caption band (dark words on a white band
above the photo, as a screenshot of a post shows it). That meme is the fact-check's image. Posts:

- **reposts** of it, edited (resized and recompressed, cropped 5% a side, watermarked,
  brightened): the same claim, which the worker must keep finding;
- **other captions**: the same template with two other claims on it (recompressed): not the
  fact-check's claim, which a same-picture rule shows as a "match".

Each post image is looked for as the worker looks (PDQ within 31 over the memes' 8 rotations and
mirror images, else keypoints: exhaustive, the worker's 20 in place), and every image is read by
the worker's Tesseract. Reported per kind: the share found as its template's meme, the share of
those whose words could be compared, and the share still shown at each words cut (a hit is
dropped when both images have words enough and they share less than the cut). Template seeds
start at ``--seed``: the cut is chosen on seeds from 0, reported on seeds from 1,000,000.

    .venv/bin/python benchmarks/image_templates.py --out benchmarks/results/image_templates_2core.json
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
from images import DATA, FONTS, Points, bits, crop, dihedral, distances, hashed, jpeg, photo, watermark

from worker.images.words import words_overlap

CUTS = (0.3, 0.35, 0.4, 0.5, 0.6)
PDQ_CUT = 31  # the worker's default image_match_distance

REPOSTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "resized + jpeg q60": lambda im: jpeg(im.resize((im.size[0] * 2 // 3, im.size[1] * 2 // 3)), 60),
    "crop 5% a side": lambda im: crop(im, 0.05),
    "watermark": watermark,
    "brighter x1.3": lambda im: ImageEnhance.Brightness(im).enhance(1.3),
}


def classic(template: Image.Image, claim: str, seed: int) -> Image.Image:
    """White words outlined in black, split between the top and the bottom of the photo."""
    image = template.copy()
    w, h = image.size
    font = ImageFont.truetype(FONTS[0], max(22, w // 18))
    lines = textwrap.wrap(claim.upper(), width=max(12, int(w / (font.size * 0.62))))[:6]
    half = (len(lines) + 1) // 2
    draw = ImageDraw.Draw(image)
    step = int(font.size * 1.2)
    for part, top in ((lines[:half], 12), (lines[half:], h - 12 - step * len(lines[half:]))):
        for n, line in enumerate(part):
            draw.text((w // 2, top + step * n), line, font=font, fill="white", anchor="mt", stroke_width=3,
                      stroke_fill="black")  # fmt: skip
    return image


def band(template: Image.Image, claim: str, seed: int) -> Image.Image:
    """Dark words on a white band above the photo (a screenshot of a post)."""
    w, h = template.size
    font = ImageFont.truetype(FONTS[2 + seed % 2], max(20, w // 28))
    lines = textwrap.wrap(claim, width=max(20, int(w / (font.size * 0.5))))[:5]
    step = int(font.size * 1.25)
    top = 24 + step * len(lines)
    image = Image.new("RGB", (w, h + top), "white")
    image.paste(template, (0, top))
    draw = ImageDraw.Draw(image)
    for n, line in enumerate(lines):
        draw.text((16, 12 + step * n), line, font=font, fill=(20, 20, 20))
    return image


def claims(count: int, seed: int) -> list[str]:
    from worker.retrieval.evaluation import load_labelled_set

    corpus = load_labelled_set(DATA / "corpus.jsonl", DATA / "dev_queries.jsonl", DATA / "dev_qrels.tsv").corpus
    rng = np.random.default_rng(seed)
    usable = [fc.claim for fc in corpus if 40 <= len(fc.claim) <= 220]
    return [usable[i] for i in rng.choice(len(usable), size=count, replace=False)]


def run(templates: int, seed: int) -> dict[str, Any]:
    from worker.images.decode import decode
    from worker.images.ocr import Tesseract
    from worker.settings import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    ocr = Tesseract(settings.image_ocr_langs, timeout_s=60, min_word_confidence=settings.image_ocr_min_confidence)
    said = claims(3 * templates, seed)
    memes: list[Image.Image] = []
    posts: list[tuple[int, str, Image.Image]] = []  # (template, kind, image)
    for t in range(templates):
        layout = (classic, band)[t % 2]
        base = photo(seed + t).resize((800, 600)).convert("RGB")
        memes.append(jpeg(layout(base, said[3 * t], seed + t), 85))
        posts += [(t, f"repost: {name}", edit(memes[-1])) for name, edit in REPOSTS.items()]
        posts += [(t, "other caption", jpeg(layout(base, said[3 * t + k], seed + t), 75)) for k in (1, 2)]
    fc_bits = bits([h for m in memes for h in dihedral(m)])
    owner = np.repeat(np.arange(len(memes)), 8)
    points = Points(memes)

    def found(image: Image.Image) -> int | None:
        near = distances(bits([hashed(image)]), fc_bits)[0]
        best = int(np.argmin(near))
        return int(owner[best]) if near[best] <= PDQ_CUT else points.nearest(image)

    def read(image: Image.Image) -> str:
        text = ocr.read(decode(_png(image), settings.image_max_pixels))
        return text.text if text else ""

    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        meme_words = list(pool.map(read, memes))
        post_words = list(pool.map(read, [image for _, _, image in posts]))
    ocr_seconds = time.perf_counter() - started
    kinds: dict[str, dict[str, Any]] = {}
    for (t, kind, image), words in zip(posts, post_words, strict=True):
        row = kinds.setdefault(kind, {"posts": 0, "same_picture": 0, "comparable": 0, "overlaps": []})
        row["posts"] += 1
        if found(image) != t:
            continue
        row["same_picture"] += 1
        overlap = words_overlap(words, meme_words[t])
        row["comparable"] += overlap is not None
        row["overlaps"].append(overlap)
    return {
        "templates": templates,
        "seed": seed,
        "ocr_seconds_per_image": round(ocr_seconds / (len(memes) + len(posts)), 3),
        "kinds": {kind: _summary(row) for kind, row in kinds.items()},
    }


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    overlaps = row.pop("overlaps")
    posts = row["posts"]
    shown = {f"{cut:g}": round(sum(1 for o in overlaps if o is None or o >= cut) / posts, 4) for cut in CUTS}
    known = sorted(o for o in overlaps if o is not None)
    return {
        **row,
        "found_as_same_picture": round(row["same_picture"] / posts, 4),
        "shown_at_cut": shown,
        "overlap_quantiles": [round(float(np.quantile(known, q)), 3) for q in (0.01, 0.1, 0.5, 0.9, 0.99)]
        if known
        else [],
    }


def _png(image: Image.Image) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent")
        return
    report = run(args.templates, args.seed)
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
