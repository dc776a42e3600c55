"""Integration tier: images in Postgres (PDQ hashes as bit(256), nearest by Hamming distance)."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from PIL import ImageOps

from tests.conftest import consume_until, eventually, produce
from tests.integration.test_image_fetch import HOST, _serve
from tests.integration.test_worker import bodies, seed_corpus
from tests.unit.test_images import encoded, photo
from worker.adapter.runtime import running
from worker.domain.images import ImageRead
from worker.images.pdq import hamming, pdq_hash
from worker.settings import Settings
from worker.storage import Store
from worker.wire import FactCheck

MEME = "Drinking bleach cures the coronavirus in two days"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_fact_check_images_are_found_by_hamming_distance_within_the_cut(database_url: str) -> None:
    store = Store(database_url)
    await store.open()
    try:
        hashes = [pdq_hash(np.asarray(photo(seed))).hex for seed in range(6)]
        await store.corpus.upsert_fact_checks([FactCheck(id=f"fc{i}", claim=f"claim {i}") for i in range(6)])
        await store.images.replace_images(
            {
                f"fc{i}": [
                    (ImageRead(0, hashes[i], 100, "sha"), f"https://cdn.example/{i}.jpg"),
                    (ImageRead(1, error="timeout", detail="no image"), None),
                ]
                for i in range(5)
            }
        )
        assert [r.pdq for r in await store.images.image_reads("fc2")] == [hashes[2], None]

        # A post image one bit off fc3's; one off nobody's (fc5 has no image); an empty list.
        near = format(int(hashes[3], 16) ^ 1, "064x")
        found = await store.images.nearest_images([near, hashes[5]], max_distance=31)
        assert [[(h.fact_check_id, h.image, h.distance) for h in hits] for hits in found] == [[("fc3", 0, 1)], []]
        assert found[0][0].details.claim == "claim 3"
        assert hamming(near, hashes[3]) == 1
        assert await store.images.nearest_images([], max_distance=31) == []

        # A fact-check's image is kept under its 7 other rotations and mirror images too.
        mirrored = format(int(hashes[5], 16) ^ 3, "064x")
        await store.images.replace_images(
            {"fc5": [(ImageRead(0, hashes[5], 100, variants=("0" * 64, mirrored)), None)]}
        )
        [[hit]] = await store.images.nearest_images([mirrored], max_distance=31)
        assert (hit.fact_check_id, hit.distance) == ("fc5", 0)
        assert [r.pdq for r in await store.images.image_reads("fc5")] == [hashes[5]]

        # Replaced with the fact-check; gone with it.
        await store.images.replace_images({"fc3": []})
        assert await store.images.nearest_images([near], max_distance=31) == [[]]
        await store.corpus.delete_fact_checks(["fc2"])
        assert await store.images.nearest_images([hashes[2]], max_distance=31) == [[]]
    finally:
        await store.close()


async def test_fact_check_image_keypoints_find_a_cropped_copy_and_are_replaced_with_it(database_url: str) -> None:
    from worker.images.keypoints import DESCRIPTOR_CUT, PER_POINT, orb_keypoints, same_pictures

    store = Store(database_url)
    await store.open()
    try:
        await store.corpus.upsert_fact_checks([FactCheck(id=f"kp{i}", claim=f"claim {i}") for i in range(4)])
        reads = {f"kp{i}": [(ImageRead(0, "f" * 64, 100, "sha", keypoints=orb_keypoints(np.asarray(photo(i)))), None)]
                 for i in range(3)}  # fmt: skip
        reads["kp3"] = [(ImageRead(0, error="timeout"), "https://cdn.example/late.jpg")]
        await store.images.replace_images(reads)
        assert sorted(await store.images.image_sources(["kp0", "kp1", "kp2", "kp3"])) == ["kp0", "kp1", "kp2"]

        w, h = photo(1).size
        cropped = orb_keypoints(np.asarray(photo(1).crop((48, 0, w, h - 40))))  # ~8% off the left, the bottom
        other = orb_keypoints(np.asarray(photo(9)))
        pairs = await store.images.nearest_points(
            [cropped.descriptors, other.descriptors, ()], max_distance=DESCRIPTOR_CUT, per_point=PER_POINT
        )
        assert len(pairs) == 3 and pairs[2] == [] and pairs[0]
        assert all(p.fact_check_id in reads and 0 <= p.x <= 1 and 0 <= p.y <= 1 for found in pairs for p in found)
        assert [fc for fc, _, _ in same_pictures(cropped, pairs[0], 20)] == ["kp1"]
        assert same_pictures(other, pairs[1], 20) == []
        assert (await store.images.fact_check_details(["kp1", "gone"]))["kp1"].claim == "claim 1"

        # Replaced with the fact-check's images; gone with the fact-check.
        await store.images.replace_images({"kp1": []})
        await store.corpus.delete_fact_checks(["kp0", "kp2"])
        [again] = await store.images.nearest_points([cropped.descriptors], max_distance=DESCRIPTOR_CUT, per_point=2)
        assert again == []
    finally:
        await store.close()


async def test_a_post_is_matched_by_its_image_and_a_hostile_link_costs_it_nothing(stack_settings: Settings) -> None:
    """Real tansu, Postgres and worker: a fact-check's photo, served by a local 'CDN' (the one
    allowed private address), is matched by a post carrying a recompressed, resized copy inline."""
    runner, port = await _serve()
    settings = stack_settings.model_copy(update={"image_allow_networks": f"{HOST}/32", "image_fetch_timeout_s": 2.0})
    await seed_corpus(settings)
    try:
        async with running(settings) as runtime:
            images = [{"url": f"http://{HOST}:{port}/image"}, {"url": "http://169.254.169.254/x.png"}]
            fc = {"id": "fc-photo", "claim": "This photo shows a shark on a flooded highway", "images": images}
            meme = {"id": "fc-meme", "claim": MEME}
            await produce(
                settings.kafka_bootstrap,
                settings.topic_factchecks,
                [(b"fc-photo", json.dumps(fc).encode()), (b"fc-meme", json.dumps(meme).encode())],
            )

            async def indexed() -> bool:
                return [r.error for r in await runtime.store.images.image_reads("fc-photo")] == [
                    None,
                    "address_refused",
                ]

            assert await eventually(indexed, 30)
            copy = b64(encoded(photo(7).resize((320, 240)), "JPEG", quality=40))
            text = "unbelievable, look at this"
            posts = [
                {"id": "img-copy", "text": text, "images": [{"data": copy}]},
                {"id": "img-other", "text": text, "images": [{"data": b64(encoded(photo(8)))}]},
                {"id": "img-mirror", "text": text, "images": [{"data": b64(encoded(ImageOps.mirror(photo(7))))}]},
                {"id": "img-crop", "text": text, "images": [{"data": b64(encoded(photo(7).crop((40, 30, 600, 450))))}]},
                {"id": "img-mirror-crop", "text": text,
                 "images": [{"data": b64(encoded(ImageOps.mirror(photo(7).crop((40, 30, 600, 450)))))}]},
                {"id": "img-only", "images": [{"data": b64(caption(MEME.replace("s t", "s\nt"), seed=3))}]},
                {"id": "img-meme", "text": "lol", "images": [{"data": b64(caption(MEME.replace("s t", "s\nt")))}]},
                {"id": "img-hostile", "text": "5G towers spread the virus",
                 "images": [{"url": "http://169.254.169.254/latest/meta-data/"}, {"data": b64(b"<html>no</html>")},
                            {"url": f"http://localhost:{port}/image"}]},
            ]  # fmt: skip
            await produce(
                settings.kafka_bootstrap,
                settings.topic_posts,
                [(p["id"].encode(), json.dumps(p).encode()) for p in posts],
            )
            records = await consume_until(settings.kafka_bootstrap, [settings.topic_matches], lambda rs: len(rs) >= 8)
    finally:
        await runner.cleanup()
    results = {r["post_id"]: r for r in bodies(records, settings.topic_matches)}
    top = results["img-copy"]["matches"][0]
    assert top["fact_check_id"] == "fc-photo" and top["tier"] == "match" and top["image"] == 0
    assert top["image_distance"] <= settings.image_match_distance and top["rank"] == 1
    assert results["img-copy"]["images"][0]["error"] is None and results["img-copy"]["duplicate_of"] is None
    assert all(m["image"] is None for m in results["img-other"]["matches"])  # another picture: no image evidence
    assert results["img-other"]["duplicate_of"] is None  # same text, another picture: never a repeat
    mirror = results["img-mirror"]["matches"][0]  # the picture flipped: the same picture
    assert (mirror["fact_check_id"], mirror["tier"], mirror["image"]) == ("fc-photo", "match", 0)
    crop = results["img-crop"]["matches"][0]  # cropped 6% a side: PDQ misses it, its keypoints do not
    assert (crop["fact_check_id"], crop["tier"], crop["image"], crop["image_distance"]) == (
        "fc-photo",
        "match",
        0,
        None,
    )
    assert crop["image_keypoints"] >= settings.image_match_keypoints
    flipped = results["img-mirror-crop"]["matches"][0]  # mirrored and cropped: its mirror image's keypoints
    assert (flipped["fact_check_id"], flipped["tier"], flipped["image"], flipped["image_distance"]) == (
        "fc-photo",
        "match",
        0,
        None,
    )
    assert flipped["image_keypoints"] >= settings.image_match_keypoints
    if runtime.image_reader is not None and runtime.image_reader.ocr is not None:  # Tesseract installed
        meme = results["img-meme"]
        assert meme["images"][0]["text"].split() == MEME.split()
        assert meme["matches"][0]["fact_check_id"] == "fc-meme" and meme["matches"][0]["image_text"] == 0
        alone = results["img-only"]  # no text at all: answered by the text in its image
        assert alone["text"] == "" and alone["matches"][0]["fact_check_id"] == "fc-meme"
        assert alone["matches"][0]["image_text"] == 0 and alone["cluster_id"] is not None
    hostile = results["img-hostile"]
    assert [i["error"] for i in hostile["images"]] == ["address_refused", "not_an_image", "address_refused"]
    assert hostile["matches"] and all(m["image"] is None for m in hostile["matches"])  # its text still matched


def caption(text: str, seed: int = 0, size: tuple[int, int] = (900, 320)) -> bytes:
    """A meme: the claim written on a photo-like background in DejaVu Sans (a Debian font)."""
    from PIL import ImageDraw, ImageFont

    image = photo(seed, size)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 34)
    box = draw.multiline_textbbox((30, 30), text, font=font)
    draw.rectangle((box[0] - 10, box[1] - 10, box[2] + 10, box[3] + 10), fill=(0, 0, 0))
    draw.multiline_text((30, 30), text, font=font, fill=(255, 255, 255))
    return encoded(image, "JPEG", quality=85)


def needs_tesseract() -> Any:
    from worker.images.ocr import tesseract_languages

    if not {"eng", "spa", "fra", "deu", "por"} <= tesseract_languages():
        pytest.skip("Tesseract with eng, spa, fra, deu and por (make installs them)")
    from worker.images.ocr import Tesseract

    return Tesseract("eng+spa+fra+deu+por", timeout_s=30)


def test_tesseract_reads_a_memes_caption_in_each_demo_language() -> None:
    from worker.images.decode import decode

    ocr = needs_tesseract()
    captions = {
        "en": "Drinking bleach cures\nthe coronavirus",
        "es": "Las torres 5G propagan\nel coronavirus en Europa",
        "fr": "Le vaccin contient une\npuce électronique",
        "de": "Die Mondlandung wurde\nin einem Studio gedreht",
        "pt": "A vacina altera o DNA\ndas pessoas",
    }
    for n, (lang, text) in enumerate(captions.items()):
        found = ocr.read(decode(caption(text, seed=n), 10**7))
        assert found is not None and found.confidence > 80, lang
        assert found.text.split() == text.split(), (lang, found.text)
    assert ocr.read(np.asarray(photo(3))) is None  # no text


async def test_reloading_a_corpus_reads_only_the_images_that_changed(database_url: str) -> None:
    from worker.core.indexer import index_images
    from worker.wire import ImageRef

    def sha(ref: ImageRef) -> str:
        import hashlib

        return hashlib.sha256(base64.b64decode(ref.data) if ref.data else b"fetched").hexdigest()

    class Counting:
        def __init__(self) -> None:
            self.read_refs: list[ImageRef] = []

        async def read(self, images: list[ImageRef], *, ocr: bool = True) -> list[ImageRead]:
            self.read_refs += images
            return [ImageRead(i, format(i + 1, "064x"), 100, sha(ref)) for i, ref in enumerate(images)]

        async def close(self) -> None:
            return None

    store = Store(database_url)
    await store.open()
    try:
        inline = b64(encoded(photo(1, (32, 32))))
        fcs = [
            FactCheck(id="a", claim="a", images=[ImageRef(url="https://cdn.example/a.jpg")]),
            FactCheck(id="b", claim="b", images=[ImageRef(data=inline)]),
            FactCheck(id="c", claim="c"),
        ]
        await store.corpus.upsert_fact_checks(fcs)
        source = Counting()
        assert await index_images(source, store.images, fcs) == 2
        assert await index_images(source, store.images, fcs) == 0  # the same links and bytes: nothing read
        moved = [fcs[0].model_copy(update={"images": [ImageRef(url="https://cdn.example/a2.jpg")]}), fcs[1]]
        assert await index_images(source, store.images, moved) == 1
        assert source.read_refs[-1].url == "https://cdn.example/a2.jpg"
        assert await store.images.image_links("a") == ["https://cdn.example/a2.jpg"]
        await index_images(source, store.images, [fcs[1].model_copy(update={"images": []})])
        assert await store.images.image_links("b") == []  # no images given: none kept
    finally:
        await store.close()


def banded(text: str, seed: int) -> bytes:
    """A picture with a claim written in a white band above it (a screenshot of a post): one
    picture, as many captions as posters like."""
    from PIL import Image, ImageDraw, ImageFont

    picture = photo(seed)
    image = Image.new("RGB", (picture.size[0], picture.size[1] + 90), "white")
    image.paste(picture, (0, 90))
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 30)
    ImageDraw.Draw(image).multiline_text((16, 10), text, font=font, fill=(20, 20, 20))
    return encoded(image, "JPEG", quality=85)


async def test_another_claim_on_a_fact_checks_picture_is_not_its_match_and_a_repost_still_is(
    database_url: str,
) -> None:
    """Real Postgres and Tesseract: a fact-check's meme (its claim above a picture) is read for its
    words when indexed; a post with the same picture and another claim on it, which PDQ finds the
    same picture, is not matched by it, while a recompressed, resized repost still is."""
    from io import BytesIO

    from PIL import Image

    from worker.core.images import ImageConfig, ImageMatching
    from worker.core.indexer import index_images
    from worker.images.fetch import FetchPolicy, ImageFetcher
    from worker.images.reader import ImageReader, ReadLimits
    from worker.wire import ImageRef

    ocr = needs_tesseract()
    meme = banded("Drinking bleach cures the\ncoronavirus in two days", seed=21)
    other = banded("5G towers spread the virus\nacross every city in Europe", seed=21)
    small = Image.open(BytesIO(meme)).convert("RGB")
    repost = encoded(small.resize((small.size[0] * 2 // 3, small.size[1] * 2 // 3)), "JPEG", quality=50)

    def pdq(data: bytes) -> str:
        return pdq_hash(np.asarray(Image.open(BytesIO(data)).convert("RGB"))).hex

    assert hamming(pdq(other), pdq(meme)) <= 31  # the picture alone would make it a match
    reader = ImageReader(ImageFetcher(FetchPolicy()), ReadLimits(), ocr)
    store = Store(database_url)
    await store.open()
    try:
        fc = FactCheck(id="fc-meme", claim="Bleach does not cure COVID-19", images=[ImageRef(data=b64(meme))])
        await store.corpus.upsert_fact_checks([fc])
        assert await index_images(reader, store.images, [fc]) == 1
        words = (await store.images.image_words([("fc-meme", 0), ("fc-meme", 1)]))[("fc-meme", 0)]
        assert words is not None and "bleach" in words.lower()

        matching = ImageMatching(reader, store.images, ImageConfig())
        reads = await matching.read([[ImageRef(data=b64(other))], [ImageRef(data=b64(repost))]])
        other_hits, repost_hits = await matching.hits(reads)
        assert other_hits == []
        assert [h.fact_check_id for h in repost_hits] == ["fc-meme"] and repost_hits[0].words == words
        pictures_alone = ImageMatching(reader, store.images, ImageConfig(words_cut=0))
        assert [h.fact_check_id for h in (await pictures_alone.hits(reads))[0]] == ["fc-meme"]
    finally:
        await reader.close()
        await store.close()
