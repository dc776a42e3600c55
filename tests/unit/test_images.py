"""Unit tier: what the image code decides without a network: which addresses and links may be
fetched, what untrusted bytes are, that PDQ sees the same photo through the usual edits, and that
keypoints find it cropped."""

from __future__ import annotations

import base64
import io
import ipaddress
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from worker.domain.images import Keypoints, PointPair
from worker.images.decode import decode, inline_bytes, sniff
from worker.images.fetch import FetchPolicy, ImageRefused, address_allowed, check_url
from worker.images.keypoints import DESCRIPTOR_CUT, PER_POINT, inliers, orb_keypoints, same_pictures
from worker.images.pdq import MIN_QUALITY, hamming, pdq_hash

CUT = 31  # hasher-matcher-actioner's default PDQ match distance
MIN_KEYPOINTS = 20  # the worker's default image_match_keypoints


def photo(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A distinct synthetic 'photo': soft shapes on a gradient (photos have few sharp edges)."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * rng.uniform(0.1, 0.4) + y * rng.uniform(0.1, 0.4) + rng.uniform(0, 90)) % 256] * 3, -1)
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, w * 0.9)), int(rng.integers(0, h * 0.9))
        box = [x0, y0, x0 + int(rng.integers(w // 10, w // 2)), y0 + int(rng.integers(h // 8, h // 2))]
        draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image.filter(ImageFilter.GaussianBlur(4))


def encoded(image: Image.Image, kind: str = "PNG", **kw: object) -> bytes:
    out = io.BytesIO()
    image.save(out, kind, **kw)
    return out.getvalue()


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.8", False),
        ("172.16.3.4", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("169.254.169.254", False),  # the cloud metadata service
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fd00::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),  # loopback, IPv4-mapped
        ("::ffff:10.0.0.1", False),
    ],
)
def test_only_global_addresses_are_fetched_by_default(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address), FetchPolicy()) is allowed


def test_an_allowed_network_lets_a_private_cdn_through_and_nothing_else() -> None:
    policy = FetchPolicy(allow_networks=FetchPolicy.networks("10.20.0.0/16, 127.0.0.2/32"))
    assert address_allowed(ipaddress.ip_address("10.20.3.4"), policy)
    assert address_allowed(ipaddress.ip_address("127.0.0.2"), policy)
    assert not address_allowed(ipaddress.ip_address("10.21.0.1"), policy)
    assert not address_allowed(ipaddress.ip_address("127.0.0.1"), policy)
    with pytest.raises(ValueError):
        FetchPolicy.networks("10.0.0.0/33")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/a.png", "bad_url"),
        ("file:///etc/passwd", "bad_url"),
        ("javascript:alert(1)", "bad_url"),
        ("http://user:pw@example.com/a.png", "bad_url"),
        ("http:///a.png", "bad_url"),
        ("http://127.0.0.1/a.png", "address_refused"),
        ("http://169.254.169.254/latest/meta-data/", "address_refused"),
        ("http://[::1]:8080/a.png", "address_refused"),
        ("https://evil.example/a.png", "host_refused"),
    ],
)
def test_links_the_fetcher_never_tries(url: str, reason: str) -> None:
    policy = FetchPolicy(hosts=("cdn.example", "pbs.twimg.com")) if reason == "host_refused" else FetchPolicy()
    with pytest.raises(ImageRefused) as refused:
        check_url(url, policy)
    assert refused.value.reason == reason


def test_allowed_hosts_include_their_subdomains_only() -> None:
    policy = FetchPolicy(hosts=("cdn.example",))
    assert check_url("https://cdn.example/a.png", policy) == "cdn.example"
    assert check_url("https://img.cdn.example/a.png", policy) == "img.cdn.example"
    with pytest.raises(ImageRefused):
        check_url("https://notcdn.example/a.png", policy)


def test_what_an_image_is_comes_from_its_bytes() -> None:
    image = photo(1, (64, 48))
    for kind in ("PNG", "JPEG", "GIF", "WEBP"):
        data = encoded(image, kind)
        assert sniff(data) == kind
        assert decode(data, 10_000).shape == (48, 64, 3)
    for data in (b"", b"<html>not an image</html>", b"%PDF-1.7", b"RIFF\x00\x00\x00\x00WAVE", b"BM" + b"\x00" * 60):
        with pytest.raises(ImageRefused) as refused:
            decode(data, 10_000)
        assert refused.value.reason == "not_an_image"
    with pytest.raises(ImageRefused) as refused:
        decode(encoded(image)[:200], 10_000)  # a PNG cut short
    assert refused.value.reason == "broken_image"


def test_a_decompression_bomb_is_refused_before_its_pixels_are_decoded() -> None:
    # A valid PNG header claiming 100,000 x 100,000 pixels, and a few bytes of zlib data.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = (100_000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 10_000))
    bomb += chunk(b"IEND", b"")
    assert len(bomb) < 1_000
    with pytest.raises(ImageRefused) as refused:
        decode(bomb, 40_000_000)
    assert refused.value.reason == "too_many_pixels" and "pixels" in refused.value.detail
    # The same cap on an honest image.
    with pytest.raises(ImageRefused):
        decode(encoded(photo(2, (300, 300))), 300 * 299)


def test_inline_images_are_bounded_before_decoding() -> None:
    data = encoded(photo(3, (32, 32)))
    assert inline_bytes(base64.b64encode(data).decode(), 10_000) == data
    with pytest.raises(ImageRefused) as refused:
        inline_bytes(base64.b64encode(b"x" * 20_000).decode(), 10_000)
    assert refused.value.reason == "too_large"
    with pytest.raises(ImageRefused) as refused:
        inline_bytes("not base64 at all!", 10_000)
    assert refused.value.reason == "bad_data"


def test_pdq_sees_the_same_photo_through_resizing_recompression_brightness_and_a_watermark() -> None:
    for seed in range(5):
        original = photo(seed)
        reference = pdq_hash(np.asarray(original))
        assert reference.usable and len(reference.hex) == 64 and len(reference.bits) == 256
        marked = original.copy()
        ImageDraw.Draw(marked).text((20, 440), "@somebody reposted this", fill=(255, 255, 255))
        edits = {
            "half size": original.resize((320, 240)),
            "double size": original.resize((1280, 960)),
            "jpeg q30": Image.open(io.BytesIO(encoded(original, "JPEG", quality=30))),
            "brighter": ImageEnhance.Brightness(original).enhance(1.3),
            "darker": ImageEnhance.Brightness(original).enhance(0.75),
            "watermark": marked,
        }
        for name, edited in edits.items():
            distance = hamming(reference.hex, pdq_hash(np.asarray(edited.convert("RGB"))).hex)
            assert distance <= CUT, (seed, name, distance)


def test_pdq_keeps_distinct_photos_apart_and_flags_a_blank_image() -> None:
    hashes = [pdq_hash(np.asarray(photo(seed))).hex for seed in range(12)]
    distances = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(distances) > 2 * CUT
    blank = pdq_hash(np.full((200, 200, 3), 128, dtype=np.uint8))
    assert blank.quality < MIN_QUALITY and not blank.usable


def test_a_same_picture_fact_check_is_a_match_listed_first_and_a_text_match_gains_the_evidence() -> None:
    from worker.core.images import with_image_matches
    from worker.domain import FactCheckDetails
    from worker.domain.images import ImageHit
    from worker.wire import Match

    def text(fc: str, rank: int, tier: str | None) -> Match:
        return Match(fact_check_id=fc, score=0.8, rank=rank, claim=fc, tier=tier, probability=0.6)  # type: ignore[arg-type]

    details = FactCheckDetails("a shark on a highway", None, "https://fc.example/1", "en", "false", None)
    matches = [text("fc-a", 1, "suggestion"), text("fc-b", 2, None), text("fc-c", 3, None)]
    hits = [
        ImageHit("fc-photo", 1, 12, details),
        ImageHit("fc-c", 0, 4, details),
        ImageHit("fc-c", 1, 20, details),  # the same fact-check by another image: its nearest counts
        ImageHit("fc-q", 0, 2, details),
        ImageHit("fc-crop", 0, None, details, keypoints=40),  # found by keypoints: after PDQ's
        ImageHit("fc-crop2", 1, None, details, keypoints=90),
    ]
    merged = with_image_matches(matches, hits, quarantined=frozenset({"fc-q"}))
    assert [(m.fact_check_id, m.rank, m.tier, m.image, m.image_distance, m.image_keypoints) for m in merged] == [
        ("fc-q", 1, "suggestion", 0, 2, None),  # quarantined: one tier lower, like a text match
        ("fc-c", 2, "match", 0, 4, None),
        ("fc-photo", 3, "match", 1, 12, None),
        ("fc-crop2", 4, "match", 1, None, 90),  # most keypoints in place first
        ("fc-crop", 5, "match", 0, None, 40),
        ("fc-a", 6, "suggestion", None, None, None),
        ("fc-b", 7, None, None, None, None),
    ]
    assert merged[1].probability == 0.6 and merged[1].score == 0.8  # found by text too: its scores stay
    assert merged[2].probability is None and merged[2].score == 0.0 and merged[2].claim == "a shark on a highway"
    assert with_image_matches(matches, [], frozenset()) == matches


def test_the_text_in_an_image_adds_its_matches_and_the_surer_of_two_wins() -> None:
    from worker.core.images import with_text_in_images
    from worker.wire import Match

    def m(fc: str, rank: int, tier: str | None, p: float | None, score: float = 0.5) -> Match:
        return Match(fact_check_id=fc, score=score, rank=rank, claim=fc, tier=tier, probability=p)  # type: ignore[arg-type]

    own = [m("fc-a", 1, "suggestion", 0.7), m("fc-b", 2, None, 0.3)]
    in_image = [(1, [m("fc-meme", 1, "match", 0.95), m("fc-a", 2, "suggestion", 0.6), m("fc-b", 3, "suggestion", 0.8)])]
    merged = with_text_in_images(own, in_image)
    assert [(x.fact_check_id, x.rank, x.tier, x.image_text) for x in merged] == [
        ("fc-meme", 1, "match", 1),
        ("fc-b", 2, "suggestion", 1),  # surer from the image's text
        ("fc-a", 3, "suggestion", None),  # surer from the post's own text: stays its own
    ]
    assert with_text_in_images(own, []) == own
    # Uncalibrated (no probabilities): the cosine decides.
    plain = with_text_in_images([m("x", 1, None, None, 0.4)], [(0, [m("x", 1, None, None, 0.9)])])
    assert [(x.fact_check_id, x.score, x.image_text) for x in plain] == [("x", 0.9, 0)]


async def test_a_name_that_also_resolves_inside_is_refused_and_only_checked_addresses_are_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import socket

    from worker.images.fetch import PolicyResolver

    answers = {
        "cdn.example": ["93.184.216.34", "151.101.1.69"],
        "rebind.example": ["93.184.216.34", "169.254.169.254"],  # one public, one the metadata service
        "mapped.example": ["::ffff:10.0.0.5"],
    }

    async def getaddrinfo(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in answers[host]
        ]

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    resolver = PolicyResolver(FetchPolicy())
    found = await resolver.resolve("cdn.example", 443)
    assert [(r["host"], r["hostname"], r["port"]) for r in found] == [
        ("93.184.216.34", "cdn.example", 443),
        ("151.101.1.69", "cdn.example", 443),
    ]
    for host in ("rebind.example", "mapped.example"):
        with pytest.raises(OSError, match="resolves to"):
            await resolver.resolve(host, 443)


def _pairs(post: Keypoints, index: dict[str, Keypoints]) -> list[PointPair]:
    """What the store's keypoint search returns, exhaustively: each post keypoint's nearest
    fact-check keypoints by Hamming distance, within the cut."""

    def bits(k: Keypoints) -> np.ndarray:
        return np.unpackbits(np.array([list(bytes.fromhex(h)) for h in k.descriptors], np.uint8), axis=1)

    q = bits(post).astype(np.int32)
    pairs = []
    for fc, kept in index.items():
        d = bits(kept).astype(np.int32)
        distance = q.sum(1)[:, None] + d.sum(1)[None, :] - 2 * (q @ d.T)
        for n, row in enumerate(distance):
            for j in np.argsort(row, kind="stable")[:PER_POINT]:
                if row[j] <= DESCRIPTOR_CUT:
                    pairs.append(PointPair(n, fc, 0, *kept.points[j]))
    return pairs


def test_keypoints_find_a_cropped_copy_that_pdq_misses_and_no_other_picture() -> None:
    index = {f"fc{seed}": orb_keypoints(np.asarray(photo(seed))) for seed in range(6)}
    original = photo(3)
    w, h = original.size
    edits = {
        "5% off each side": original.crop((32, 24, w - 32, h - 24)),
        "10% off the left": original.crop((64, 0, w, h)),
        "10% off the bottom, then half size": original.crop((0, 0, w, h - 48)).resize((320, 216)),
    }
    for name, edited in edits.items():
        pixels = np.asarray(edited)
        assert hamming(pdq_hash(pixels).hex, pdq_hash(np.asarray(original)).hex) > CUT, name  # PDQ misses it
        found = same_pictures(orb_keypoints(pixels), _pairs(orb_keypoints(pixels), index), MIN_KEYPOINTS)
        assert [fc for fc, _, _ in found] == ["fc3"], (name, found)
    for seed in (9, 10, 11):  # other pictures: nothing, however many chance pairs they have
        for mirrored in (False, True):
            other = orb_keypoints(np.asarray(photo(seed)), mirrored=mirrored)
            assert same_pictures(other, _pairs(other, index), MIN_KEYPOINTS) == [], seed
    assert orb_keypoints(np.full((200, 200, 3), 128, dtype=np.uint8)) == Keypoints()  # no corners, no keypoints


def test_a_copy_mirrored_and_cropped_is_found_by_its_mirror_images_keypoints_only() -> None:
    index = {f"fc{seed}": orb_keypoints(np.asarray(photo(seed))) for seed in range(6)}
    original = photo(3)
    w, h = original.size
    pixels = np.asarray(ImageOps.mirror(original.crop((32, 24, w - 32, h - 24))))
    as_is, mirrored = orb_keypoints(pixels), orb_keypoints(pixels, mirrored=True)
    assert same_pictures(as_is, _pairs(as_is, index), MIN_KEYPOINTS) == []  # ORB is not mirror-invariant
    assert [fc for fc, _, _ in same_pictures(mirrored, _pairs(mirrored, index), MIN_KEYPOINTS)] == ["fc3"]
    assert orb_keypoints(pixels[:, ::-1], mirrored=True) == orb_keypoints(pixels)


def test_pairs_drawn_to_one_spot_are_not_a_picture() -> None:
    """Many post keypoints paired with one fact-check keypoint (a repeated pattern) fit a transform
    that shrinks everything to that spot: refused, and counted once at most."""
    rng = np.random.default_rng(0)
    post = Keypoints(
        tuple("0" * 64 for _ in range(40)), tuple((float(x), float(y)) for x, y in rng.uniform(0, 1, (40, 2)))
    )
    assert inliers(post, [PointPair(n, "fc", 0, 0.5, 0.5) for n in range(40)]) <= 1
    moved = [PointPair(n, "fc", 0, x * 0.9 + 0.05, y * 0.9 + 0.05) for n, (x, y) in enumerate(post.points)]
    assert inliers(post, moved) == 40  # a real crop: every point where one transform puts it
    assert inliers(post, moved[:2]) == 0


def test_the_demos_cropped_repost_is_found_by_its_keypoints_and_its_unrelated_photo_is_not() -> None:
    import base64 as b64

    from worker.local.demo_images import PHOTO_FACT_CHECK, demo_image_posts, with_demo_images
    from worker.wire import FactCheck

    [fc] = with_demo_images([FactCheck(id=PHOTO_FACT_CHECK, claim="a shark on a flooded highway")])
    assert fc.images[0].data is not None
    original = decode(b64.b64decode(fc.images[0].data), 10**8)
    index = {PHOTO_FACT_CHECK: orb_keypoints(original)}
    repost, _, unrelated = (decode(b64.b64decode(p["images"][0]["data"]), 10**8) for p in demo_image_posts())
    assert hamming(pdq_hash(repost).hex, pdq_hash(original).hex) > CUT  # cropped: PDQ misses it
    found = orb_keypoints(repost)
    assert [fc_id for fc_id, _, _ in same_pictures(found, _pairs(found, index), MIN_KEYPOINTS)] == [PHOTO_FACT_CHECK]
    other = orb_keypoints(unrelated)
    assert same_pictures(other, _pairs(other, index), MIN_KEYPOINTS) == []


class SlowOcr:
    """An OCR engine that takes its time (a stand-in for Tesseract's ~0.5 s an image)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def read(self, pixels: np.ndarray) -> object:
        import time

        from worker.images.ocr import OcrText

        self.calls += 1
        time.sleep(self.seconds)
        return OcrText("words in the image", 90.0)


def _inline_photos(n: int) -> list[object]:
    from worker.wire import ImageRef

    return [ImageRef(data=base64.b64encode(encoded(photo(i, (160, 120)))).decode()) for i in range(n)]


async def test_ocr_starts_only_while_the_batch_has_time_and_a_late_image_keeps_its_hash_and_keypoints() -> None:
    import time

    from worker.images.fetch import ImageFetcher
    from worker.images.reader import OCR_LATE, ImageReader, ReadLimits

    ocr = SlowOcr(0.05)
    reader = ImageReader(ImageFetcher(FetchPolicy()), ReadLimits(), ocr)  # type: ignore[arg-type]
    try:
        late = await reader.read(_inline_photos(3), ocr_until=time.monotonic() - 1)  # type: ignore[arg-type]
        assert ocr.calls == 0
        assert all(r.pdq and r.keypoints and r.error is None and r.text is None for r in late)
        assert {r.detail for r in late} == {OCR_LATE}
        timely = await reader.read(_inline_photos(3), ocr_until=time.monotonic() + 60)  # type: ignore[arg-type]
        assert ocr.calls == 3
        assert all(r.pdq and r.text == "words in the image" and r.detail is None for r in timely)
    finally:
        await reader.close()


async def test_reading_images_never_takes_the_threads_the_encoder_calls_run_on() -> None:
    import asyncio
    import time
    from concurrent.futures import ThreadPoolExecutor

    from worker.images.fetch import ImageFetcher
    from worker.images.reader import ImageReader, ReadLimits

    # One default thread: were image reads run there, an encoder call would wait for them.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))
    reader = ImageReader(ImageFetcher(FetchPolicy()), ReadLimits(), SlowOcr(0.5))  # type: ignore[arg-type]
    try:
        reading = asyncio.ensure_future(reader.read(_inline_photos(4)))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await asyncio.to_thread(lambda: None)
        assert time.monotonic() - started < 0.3
        await reading
    finally:
        await reader.close()
