"""Images, measured: PDQ recall under common edits, false matches on unrelated pictures, and the
text-in-image (OCR) path's accuracy on claims rendered as memes.

- **PDQ**: ``--photos`` distinct generated "photos" (soft shapes on gradients, varied sizes and
  aspect ratios; no real photos of fact-checks' subjects exist offline) stand for fact-checks'
  images. Each is edited (resized, recompressed, brightened, darkened, watermarked, grey, cropped,
  mirrored) and hashed; an edit is *recalled* when its nearest fact-check hash is its original's
  and within the cut (fact-checks' images indexed under their 8 rotations and mirror images, as
  the worker keeps them). ``--unrelated`` other pictures measure false matches: the share with any
  fact-check hash within the cut. Several cuts side by side (the worker's default is 31). Then
  what the worker does: an edit PDQ finds nothing for at 31 is looked for by its keypoints
  (``pdq_or_keypoints``; exhaustive search standing for the store's HNSW, the worker's cut of 20
  keypoints in place). The photos' seeds start at ``--seed``: not the seeds the cut was chosen on.
- **OCR**: ``--memes`` CheckThat! 2020 fact-checks (``../shared/data``) have their claim rendered
  onto varied backgrounds, fonts and sizes, then recompressed and some resized; Tesseract (the
  worker's languages) reads them, and the text is searched as the worker searches it (its claim
  text, the default model, exact cosine over all 10,375 fact-checks, float32 index). accuracy@1:
  the rendered fact-check ranks first. The claim typed rather than rendered is the ceiling.
- **Keypoints in Postgres**: the photos' keypoints loaded into an embedded Postgres, and cropped
  copies (5% a side) and other pictures searched through the store, as the worker searches them
  (HNSW, one image per round trip): recall, false matches, milliseconds per image.
- **Cost**: images read per second (decode + PDQ, and + OCR) beside the encoder's posts per
  second on the same machine, one after the other in this run.

    .venv/bin/python benchmarks/images.py --out benchmarks/results/images_2core.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.domain.images import Keypoints, PointPair  # noqa: E402
from worker.images.decode import decode  # noqa: E402
from worker.images.keypoints import DESCRIPTOR_CUT, PER_POINT, orb_keypoints, same_pictures  # noqa: E402
from worker.images.memes import FONTS, meme, photo  # noqa: E402
from worker.images.pdq import pdq_dihedral, pdq_hash  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "checkthat2020"
CUTS = (16, 24, 31, 40, 48)
MIN_KEYPOINTS = 20  # the worker's default image_match_keypoints (chosen on seeds 0-999; reported on others)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return Image.open(io.BytesIO(out.getvalue())).convert("RGB")


def crop(image: Image.Image, share: float) -> Image.Image:
    w, h = image.size
    return image.crop((int(w * share), int(h * share), int(w * (1 - share)), int(h * (1 - share))))


def watermark(image: Image.Image) -> Image.Image:
    marked = image.copy()
    font = ImageFont.truetype(FONTS[0], max(14, image.size[1] // 24))
    ImageDraw.Draw(marked).text(
        (12, image.size[1] - image.size[1] // 12), "@reposter via t.me/x", font=font, fill="white"
    )
    return marked


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "half size": lambda im: im.resize((im.size[0] // 2, im.size[1] // 2)),
    "1.5x size": lambda im: im.resize((im.size[0] * 3 // 2, im.size[1] * 3 // 2)),
    "jpeg q30": lambda im: jpeg(im, 30),
    "resized + jpeg q60": lambda im: jpeg(im.resize((im.size[0] * 2 // 3, im.size[1] * 2 // 3)), 60),
    "brighter x1.3": lambda im: ImageEnhance.Brightness(im).enhance(1.3),
    "darker x0.75": lambda im: ImageEnhance.Brightness(im).enhance(0.75),
    "contrast x1.3": lambda im: ImageEnhance.Contrast(im).enhance(1.3),
    "watermark": watermark,
    "grey": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "crop 1% a side": lambda im: crop(im, 0.01),
    "crop 5% a side (~10%)": lambda im: crop(im, 0.05),
    "crop 10% off the left": lambda im: im.crop((im.size[0] // 10, 0, *im.size)),
    "crop 10% a side": lambda im: crop(im, 0.10),
    "mirrored": ImageOps.mirror,
    "mirrored + crop 5% a side": lambda im: ImageOps.mirror(crop(im, 0.05)),
    "rotated 90": lambda im: im.rotate(90, expand=True),
}


def bits(hexes: list[str]) -> np.ndarray:
    return np.unpackbits(np.array([list(bytes.fromhex(h)) for h in hexes], dtype=np.uint8), axis=1)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between every row of ``a`` and of ``b`` (0/1 bit matrices)."""
    a16, b16 = a.astype(np.int16), b.astype(np.int16)
    return np.asarray(a16.sum(1)[:, None] + b16.sum(1)[None, :] - 2 * (a16 @ b16.T))


def hashed(image: Image.Image) -> str:
    return pdq_hash(np.asarray(image.convert("RGB"))).hex


def dihedral(image: Image.Image) -> list[str]:
    first, others = pdq_dihedral(np.asarray(image.convert("RGB")))
    return [first.hex, *others]


def pdq_part(photos: int, unrelated: int, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    originals = [photo(seed + n) for n in range(photos)]
    # As the worker keeps a fact-check's image: under its 8 rotations and mirror images.
    index = bits([h for im in originals for h in dihedral(im)])
    points = Points(originals)
    out: dict[str, Any] = {"photos": photos, "unrelated": unrelated, "seed": seed, "recall": {}}
    for name, edit in EDITS.items():
        edited = [edit(im) for im in originals]
        d = distances(bits([hashed(im) for im in edited]), index).reshape(photos, photos, 8).min(2)
        nearest, own = d.argmin(1), d[np.arange(photos), np.arange(photos)]
        recalled = {cut: (nearest == np.arange(photos)) & (own <= cut) for cut in CUTS}
        out["recall"][name] = {str(cut): round(float(np.mean(hit)), 4) for cut, hit in recalled.items()}
        out["recall"][name]["median_distance"] = float(np.median(own))
        # What the worker does: an image PDQ finds nothing for (at 31) is looked for by keypoints.
        missed = np.flatnonzero(~recalled[31] & (d.min(1) > 31))
        by_points = sum(points.nearest(edited[n]) == n for n in missed)
        out["recall"][name]["pdq_or_keypoints"] = round(float((recalled[31].sum() + by_points) / photos), 4)
        print(f"  {name}: {out['recall'][name]}", flush=True)
    others = [photo(10_000_000 + seed + n) for n in range(unrelated)]
    nearest_other = distances(bits([hashed(im) for im in others]), index).min(1)
    out["false_match_rate"] = {str(cut): round(float(np.mean(nearest_other <= cut)), 5) for cut in CUTS}
    out["nearest_unrelated_distance_min"] = int(nearest_other.min())
    found = [points.nearest(im) for n, im in enumerate(others) if nearest_other[n] > 31]
    out["false_match_rate"]["pdq_or_keypoints"] = round(
        float((np.sum(nearest_other <= 31) + sum(f is not None for f in found)) / unrelated), 5
    )
    out["keypoints_per_image_mean"] = round(points.mean, 1)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


class Points:
    """The fact-check images' ORB keypoints, searched exhaustively (what the store's HNSW search
    approximates), and a picture's same picture by :func:`same_pictures` at the worker's cut."""

    def __init__(self, originals: list[Image.Image]) -> None:
        import cv2

        kept = [orb_keypoints(np.asarray(im.convert("RGB"))) for im in originals]
        self.owner = np.concatenate([[n] * len(k.descriptors) for n, k in enumerate(kept)]).astype(int)
        self.descriptors = np.concatenate([_descriptors(k) for k in kept])
        self.points = [p for k in kept for p in k.points]
        self.mean = float(np.mean([len(k.descriptors) for k in kept]))
        self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING)

    def nearest(self, image: Image.Image) -> int | None:
        """As the worker looks: the picture's keypoints and its mirror image's, most inliers first."""
        pixels = np.asarray(image.convert("RGB"))
        found = []
        for post in (orb_keypoints(pixels), orb_keypoints(pixels, mirrored=True)):
            if len(post.descriptors) < MIN_KEYPOINTS:
                continue
            pairs = [
                PointPair(m.queryIdx, str(self.owner[m.trainIdx]), 0, *self.points[m.trainIdx])
                for row in self.matcher.knnMatch(_descriptors(post), self.descriptors, k=PER_POINT)
                for m in row
                if m.distance <= DESCRIPTOR_CUT
            ]
            found += same_pictures(post, pairs, MIN_KEYPOINTS)
        return int(max(found, key=lambda hit: hit[2])[0]) if found else None


def store_part(photos: int, queries: int, seed: int) -> dict[str, Any]:
    """The keypoint search as the worker runs it: ``photos`` fact-check images' keypoints in an
    embedded Postgres (HNSW over ``bit(256)``), ``queries`` cropped copies (5% a side), as many
    copies mirrored and cropped, and as many other pictures searched one image per round trip
    (its keypoints and its mirror image's together); recall, false matches and milliseconds per image."""
    from worker.domain.images import ImageRead
    from worker.local.stack import start_database
    from worker.storage import Store, apply_migrations
    from worker.wire import FactCheck

    originals = [photo(seed + n) for n in range(photos)]
    posts = [
        *(crop(im, 0.05) for im in originals[:queries]),
        *(ImageOps.mirror(crop(im, 0.05)) for im in originals[:queries]),
        *(photo(20_000_000 + n) for n in range(queries)),
    ]
    post_points = [[orb_keypoints(np.asarray(im.convert("RGB")), mirrored=m) for m in (False, True)] for im in posts]

    async def run(url: str) -> dict[str, Any]:
        await apply_migrations(url)
        store = Store(url)
        await store.open()
        try:
            await store.corpus.upsert_fact_checks([FactCheck(id=str(n), claim=f"claim {n}") for n in range(photos)])
            started = time.perf_counter()
            for first in range(0, photos, 100):
                await store.images.replace_images({
                    str(n): [(ImageRead(0, sha256=str(n), keypoints=orb_keypoints(np.asarray(originals[n]))), None)]
                    for n in range(first, min(photos, first + 100))
                })  # fmt: skip
            loaded_s = time.perf_counter() - started
            found, started = [], time.perf_counter()
            for both in post_points:
                pairs = await store.images.nearest_points(
                    [points.descriptors for points in both], max_distance=DESCRIPTOR_CUT, per_point=PER_POINT
                )
                hits = [
                    hit
                    for points, p in zip(both, pairs, strict=True)
                    for hit in same_pictures(points, p, MIN_KEYPOINTS)
                ]
                found.append(int(max(hits, key=lambda hit: hit[2])[0]) if hits else None)
            per_image_ms = (time.perf_counter() - started) * 1000 / len(posts)
        finally:
            await store.close()
        return {
            "photos": photos,
            "images_loaded_per_s": round(photos / loaded_s, 1),
            "recall_crop_5pct_a_side": round(float(np.mean([f == n for n, f in enumerate(found[:queries])])), 4),
            "recall_mirrored_crop_5pct_a_side": round(
                float(np.mean([f == n for n, f in enumerate(found[queries : 2 * queries])])), 4
            ),
            "false_matches_unrelated": sum(f is not None for f in found[2 * queries :]),
            "unrelated": queries,
            "ms_per_image_search_and_check": round(per_image_ms, 1),
        }

    database = start_database()
    try:
        return asyncio.run(run(database.url))
    finally:
        database.stop()


def _descriptors(k: Keypoints) -> np.ndarray:
    return np.array([list(bytes.fromhex(h)) for h in k.descriptors], dtype=np.uint8).reshape(-1, 32)


def ocr_part(memes: int, cache: Path) -> dict[str, Any]:
    from worker.core.encoder import EncoderOptions, SentenceTransformerEncoder
    from worker.images.ocr import Tesseract
    from worker.local.models import default_model_ref
    from worker.retrieval.claims import claim_text
    from worker.retrieval.evaluation import load_labelled_set
    from worker.settings import Settings
    from worker.wire import document_text

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    labelled = load_labelled_set(DATA / "corpus.jsonl", DATA / "dev_queries.jsonl", DATA / "dev_qrels.tsv")
    corpus = labelled.corpus
    encoder = SentenceTransformerEncoder(default_model_ref(settings.model_store), EncoderOptions(device="cpu"))
    path = cache / "float32.npy"  # benchmarks/cpu_precision.py's cache, when it ran here
    if path.is_file():
        docs = np.load(path)
    else:
        texts = [document_text(fc.title, fc.claim) for fc in corpus]
        docs = np.concatenate([encoder.encode_documents(texts[i : i + 256]) for i in range(0, len(texts), 256)])
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, docs)
    rng = np.random.default_rng(2020)
    picked = sorted(rng.choice(len(corpus), size=memes, replace=False).tolist())
    ocr = Tesseract(settings.image_ocr_langs, timeout_s=60, min_word_confidence=settings.image_ocr_min_confidence)
    read: list[str] = []
    started = time.perf_counter()
    for n, i in enumerate(picked):
        found = ocr.read(decode(meme(corpus[i].claim, n), settings.image_max_pixels))
        read.append(found.text if found else "")
    ocr_seconds = time.perf_counter() - started

    def accuracy(texts: list[str]) -> float:
        vectors = encoder.encode_queries([claim_text(t) or "-" for t in texts])
        top = np.argmax(vectors @ docs.T, axis=1)
        return round(
            float(np.mean([int(t) == i and bool(text) for t, i, text in zip(top, picked, texts, strict=True)])), 4
        )

    words = [
        len(set(claim_text(r).lower().split()) & set(claim_text(corpus[i].claim).lower().split()))
        / max(1, len(set(claim_text(corpus[i].claim).lower().split())))
        for r, i in zip(read, picked, strict=True)
    ]
    return {
        "memes": memes,
        "ocr_accuracy_at_1": accuracy(read),
        "typed_claim_accuracy_at_1": accuracy([corpus[i].claim for i in picked]),
        "no_text_read": sum(1 for r in read if not r),
        "claim_words_read_mean": round(float(np.mean(words)), 4),
        "ocr_seconds_per_image": round(ocr_seconds / memes, 3),
    }


def cost_part(n: int) -> dict[str, Any]:
    """Images read per second through the worker's reader (inline, so no network), with and
    without OCR, and the encoder's posts per second, in this run one after the other."""
    from worker.configs import encoder_options, ocr_engine
    from worker.core.encoder import SentenceTransformerEncoder
    from worker.images.fetch import FetchPolicy, ImageFetcher
    from worker.images.reader import ImageReader, ReadLimits
    from worker.local.models import default_model_ref
    from worker.settings import Settings
    from worker.wire import ImageRef

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    refs = [
        ImageRef(data=base64.b64encode(meme(f"claim number {i} about a vaccine and 5G", i)).decode()) for i in range(n)
    ]

    async def rate(reader: ImageReader) -> float:
        started = time.perf_counter()
        await asyncio.gather(*(reader.read([ref]) for ref in refs))
        await reader.close()
        return round(n / (time.perf_counter() - started), 1)

    limits = ReadLimits(concurrency=settings.image_fetch_concurrency)
    plain = asyncio.run(rate(ImageReader(ImageFetcher(FetchPolicy()), limits)))
    with_ocr = asyncio.run(rate(ImageReader(ImageFetcher(FetchPolicy()), limits, ocr_engine(settings))))
    encoder = SentenceTransformerEncoder(default_model_ref(settings.model_store), encoder_options(settings))
    texts = [f"claim number {i} about a vaccine and 5G, shared again and again by many people" for i in range(256)]
    encoder.encode_queries(texts[:32])
    started = time.perf_counter()
    encoder.encode_queries(texts)
    encode = round(len(texts) / (time.perf_counter() - started), 1)
    return {"images_per_s_pdq": plain, "images_per_s_pdq_and_ocr": with_ocr, "encoder_posts_per_s": encode,
            "encoder_precision": encoder.precision}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument(
        "--seed", type=int, default=1_000_000, help="first photo's seed (the keypoint cut was chosen on 0-999)"
    )
    parser.add_argument("--unrelated", type=int, default=2000)
    parser.add_argument("--memes", type=int, default=200)
    parser.add_argument("--store-queries", type=int, default=200)
    parser.add_argument("--cost", type=int, default=40)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/factmatch-bench/precision"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--parts", default="pdq,store,ocr,cost", help="the parts to run; with --out, the others are kept from it"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    report: dict[str, Any] = json.loads(args.out.read_text()) if args.out and args.out.exists() else {}
    if "pdq" in parts:
        print("PDQ", flush=True)
        report["pdq"] = pdq_part(args.photos, args.unrelated, args.seed)
        print(json.dumps(report["pdq"]["false_match_rate"]), flush=True)
    if "store" in parts:
        print("keypoints in Postgres", flush=True)
        report["keypoint_store"] = store_part(args.photos, args.store_queries, args.seed)
        print(json.dumps(report["keypoint_store"]), flush=True)
    if "ocr" in parts:
        print("OCR", flush=True)
        report["ocr"] = ocr_part(args.memes, args.cache) if DATA.is_dir() else {"skipped": f"{DATA} is absent"}
        print(json.dumps(report["ocr"]), flush=True)
    if "cost" in parts:
        print("cost", flush=True)
        report["cost"] = cost_part(args.cost)
        print(json.dumps(report["cost"]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
