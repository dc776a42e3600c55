"""Crop-robust same-picture matching: ORB keypoints found in place.

PDQ sees the whole frame, so a repost cropped by a few percent a side hashes far from its
original (``docs/measurements.md``: recall 0 at 5% a side). Keypoints do not depend on the frame:
each fact-check image keeps up to ``FEATURES`` ORB keypoints (OpenCV; a 256-bit binary descriptor
each, stored as ``bit(256)`` beside the PDQ hashes and searched by Hamming distance), and a post's
image is the same picture when at least ``min_inliers`` of its keypoints have a near descriptor
(within ``DESCRIPTOR_CUT`` bits) in one fact-check image *and* sit where one similarity transform
(shift, scale, rotation: what a crop, a resize or a turn does) puts them (RANSAC, within
``REPROJECTION`` of the longer side). Chance pairs between unrelated pictures rarely agree on one
transform; the cut of 20 was chosen on generated pictures (``benchmarks/images.py``, other seeds
than the ones it reports). ORB is not mirror-invariant, so a post's image also has the keypoints
of its mirror image (``orb_keypoints(..., mirrored=True)``), looked for the same way: a copy both
mirrored and cropped is found by those (an uncropped mirror image is PDQ's: its dihedral hashes).

Images are scaled so their longer side is ``MAX_SIDE`` before detection (keypoints of a large
photo and of its small repost then live at the same scale; detection costs ~5 ms).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from worker.domain.images import Keypoints, PointPair

MAX_SIDE = 640
FEATURES = 500
FAST_THRESHOLD = 8  # OpenCV's default of 20 finds few corners in soft or blurred pictures
DESCRIPTOR_CUT = 64  # of 256 bits
PER_POINT = 2  # nearest fact-check keypoints looked up per post keypoint
REPROJECTION = 0.01  # RANSAC's tolerance, as a share of the longer side
MAX_SCALE = 3.0  # a copy at most 3 times smaller or larger (as shares of the longer side)
CANDIDATES = 3  # fact-check images verified per post image, most pairs first


def orb_keypoints(pixels: np.ndarray, *, mirrored: bool = False) -> Keypoints:
    """The ORB keypoints of RGB (or grey) pixels, or (``mirrored``) of their mirror image, left to
    right: descriptors as hex, points as shares of the longer side. A picture with no corners has none."""
    import cv2

    grey: np.ndarray = np.ascontiguousarray(pixels[:, ::-1] if mirrored else pixels, dtype=np.uint8)
    if grey.ndim == 3:
        grey = cv2.cvtColor(grey, cv2.COLOR_RGB2GRAY)
    scale = MAX_SIDE / max(grey.shape)
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    detector = cv2.ORB.create(nfeatures=FEATURES, fastThreshold=FAST_THRESHOLD)
    found, descriptors = detector.detectAndCompute(grey, None)
    if descriptors is None:
        return Keypoints()
    return Keypoints(
        tuple(bytes(row).hex() for row in descriptors),
        tuple((round(k.pt[0] / MAX_SIDE, 5), round(k.pt[1] / MAX_SIDE, 5)) for k in found),
    )


def inliers(post: Keypoints, pairs: Sequence[PointPair]) -> int:
    """How many keypoints of the post's image one similarity transform carries onto their pair in
    one fact-check image (``pairs``: all in that image), counted one to one (distinct points on
    both sides, so many post points drawn to one fact-check point count once); 0 below 3 pairs, or
    when the transform shrinks or grows the picture more than ``MAX_SCALE`` times (a degenerate fit
    that draws every point to one spot)."""
    import cv2

    if len(pairs) < 3:
        return 0
    src = np.array([post.points[p.point] for p in pairs], dtype=np.float32)
    dst = np.array([(p.x, p.y) for p in pairs], dtype=np.float32)
    cv2.setRNGSeed(0)  # the same pairs give the same answer (RANSAC samples at random)
    fit, kept = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=REPROJECTION)
    if fit is None or kept is None:
        return 0
    scale = float(np.sqrt(abs(np.linalg.det(fit[:, :2]))))
    if not 1 / MAX_SCALE <= scale <= MAX_SCALE:
        return 0
    chosen = [pairs[int(i)] for i in np.flatnonzero(kept.ravel())]
    return min(len({p.point for p in chosen}), len({(round(p.x, 4), round(p.y, 4)) for p in chosen}))


def same_pictures(post: Keypoints, pairs: Sequence[PointPair], min_inliers: int) -> list[tuple[str, int, int]]:
    """The fact-check images the post's image shows, found by its keypoints: (fact-check id, its
    image's index, inliers), most inliers first. Only the ``CANDIDATES`` images with the most pairs
    (and at least ``min_inliers`` of them) are verified."""
    groups: dict[tuple[str, int], list[PointPair]] = {}
    for pair in pairs:
        groups.setdefault((pair.fact_check_id, pair.image), []).append(pair)
    ranked = sorted(groups.items(), key=lambda item: (-len({p.point for p in item[1]}), item[0]))
    found = []
    for (fc_id, image), group in ranked[:CANDIDATES]:
        if len({p.point for p in group}) < min_inliers:
            break
        n = inliers(post, group)
        if n >= min_inliers:
            found.append((fc_id, image, n))
    return sorted(found, key=lambda hit: (-hit[2], hit[0], hit[1]))
