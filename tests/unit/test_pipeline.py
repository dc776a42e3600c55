"""Unit tier: the matching pipeline against fakes of the encoder, model source and searcher."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from tests.fakes import FakeEncoder, FakeModels, FakeSearcher
from worker.adapter.failures import process_isolating
from worker.core.decoding import Limits
from worker.core.pipeline import BatchOutcome, MatchPipeline, PipelineConfig, ServingModel
from worker.core.retry import DependencyUnavailable, RetryPolicy
from worker.wire import RawRecord


async def no_sleep(_: float) -> None:
    return None


def records(*bodies: bytes) -> list[RawRecord]:
    return [RawRecord("posts", 0, i, f"k{i}".encode(), body) for i, body in enumerate(bodies)]


def post(pid: str, text: str) -> bytes:
    return json.dumps({"id": pid, "text": text}).encode()


def config(
    token_budget: int = 16_384,
    max_post_chars: int = 20_000,
    encode_batch_size: int = 32,
    cache: int = 0,
    text_chars: int = 0,
) -> PipelineConfig:
    retry = RetryPolicy(attempts=3, initial_s=0.01, max_s=0.02, sleep=no_sleep)
    limits = Limits(max_record_bytes=1_048_576, max_depth=32, max_text_chars=max_post_chars)
    return PipelineConfig(
        token_budget=token_budget,
        limits=limits,
        retry=retry,
        encode_batch_size=encode_batch_size,
        embedding_cache_size=cache,
        result_text_max_chars=text_chars,
    )


def pipeline(searcher: FakeSearcher, encoder: FakeEncoder | None = None, **overrides: int) -> MatchPipeline:
    encoder = encoder or FakeEncoder()
    models = FakeModels(ServingModel("v1", encoder.dimension, encoder))
    return MatchPipeline(models, searcher, config(**overrides))


async def test_one_result_per_valid_post_and_dead_letters_for_the_rest() -> None:
    searcher = FakeSearcher()
    outcome = await pipeline(searcher).process(
        records(post("a", "one"), b"garbage", post("b", "two"), b'{"id": "c", "text": ""}')
    )
    assert [r.post_id for r in outcome.results] == ["a", "b"]
    assert all(r.model_version == "v1" and r.matches[0].fact_check_id == "fc-v1" for r in outcome.results)
    assert [d.reason for d in outcome.dead_letters] == ["invalid_json", "empty_text"]
    assert [d.offset for d in outcome.dead_letters] == [1, 3]
    assert outcome.results[1].source is not None and outcome.results[1].source.offset == 2
    # One search round trip for the whole batch.
    assert searcher.calls == [("v1", 2)]


async def test_a_result_carries_the_posts_text_cut_at_the_setting_its_link_and_time() -> None:
    body = json.dumps(
        {"id": "a", "text": "x" * 30, "url": "https://x.example/a", "created_at": "2026-11-26T10:00:00Z"}
    ).encode()
    cut = await pipeline(FakeSearcher(), text_chars=10).process(records(body, post("b", "short")))
    first, second = cut.results
    assert first.text == "x" * 10 and first.text_truncated and first.url == "https://x.example/a"
    assert first.posted_at is not None and first.posted_at.isoformat() == "2026-11-26T10:00:00+00:00"
    assert second.text == "short" and not second.text_truncated and second.url is None
    (left_out,) = (await pipeline(FakeSearcher(), text_chars=0).process(records(body))).results
    assert left_out.text is None and not left_out.text_truncated


async def test_all_bad_batch_never_touches_model_or_database() -> None:
    searcher = FakeSearcher()
    encoder = FakeEncoder()
    outcome = await pipeline(searcher, encoder).process(records(b"x", b"\xff"))
    assert len(outcome.dead_letters) == 2 and not outcome.results
    assert searcher.calls == [] and encoder.calls == []


async def test_token_budget_splits_encoder_calls_and_each_call_is_searched_once() -> None:
    searcher = FakeSearcher()
    encoder = FakeEncoder()
    long_text = " ".join(["word"] * 40)
    bodies = [post(f"p{i}", f"{long_text} {i}" if i % 2 else f"short {i}") for i in range(10)]
    outcome = await pipeline(searcher, encoder, token_budget=100).process(records(*bodies))
    assert len(outcome.results) == 10
    assert outcome.stats.encoder_calls == len(encoder.calls) > 1
    for call in encoder.calls:
        assert len(call) * max(len(t.split()) + 2 for t in call) <= 100 or len(call) == 1
    # One search per encoder call (the next call encodes meanwhile), every post in exactly one.
    assert len(searcher.calls) == outcome.stats.encoder_calls
    assert sum(n for _, n in searcher.calls) == 10
    # Results come back in input order whatever the encoder order was.
    assert [r.post_id for r in outcome.results] == [f"p{i}" for i in range(10)]


async def test_repeated_texts_are_encoded_once_in_a_batch_and_reused_across_batches() -> None:
    searcher = FakeSearcher()
    encoder = FakeEncoder()
    pipe = pipeline(searcher, encoder, cache=100)
    first = await pipe.process(
        records(post("a", "Vinegar cures covid"), post("b", "Vinegar  cures covid"), post("c", "other"))
    )
    assert sum(len(call) for call in encoder.calls) == 2 and first.stats.cache_hits == 1
    second = await pipe.process(records(post("d", "Vinegar cures covid "), post("e", "new text")))
    assert encoder.calls[-1] == ["new text"] and second.stats.cache_hits == 1
    # The reused vector is the one the encoder gave the first copy: same top match.
    by_id = {r.post_id: r for r in [*first.results, *second.results]}
    assert len(by_id) == 5 and [r.post_id for r in second.results] == ["d", "e"]
    assert sum(n for _, n in searcher.calls) == 5


async def test_encoder_calls_are_capped_by_rows_and_overlap_the_search() -> None:
    searcher = FakeSearcher()
    encoder = FakeEncoder()
    second_call_started = threading.Event()
    overlapped: list[bool] = []
    original_encode, original_search = encoder.encode_queries, searcher.search

    def encode(texts: list[str]) -> object:
        if len(encoder.calls) == 1:
            second_call_started.set()
        return original_encode(texts)

    async def search(*args: object, **kwargs: object) -> object:
        if not overlapped:
            # The first chunk's search waits for the second call: sequential stages never get there.
            overlapped.append(await asyncio.to_thread(second_call_started.wait, 2.0))
        return await original_search(*args, **kwargs)  # type: ignore[arg-type]

    encoder.encode_queries = encode  # type: ignore[method-assign]
    searcher.search = search  # type: ignore[method-assign]
    outcome = await pipeline(searcher, encoder, encode_batch_size=4).process(
        records(*(post(f"p{i}", f"text number {i}") for i in range(10)))
    )
    assert [len(c) for c in encoder.calls] == [4, 4, 2] and len(outcome.results) == 10
    assert overlapped == [True]
    assert [r.post_id for r in outcome.results] == [f"p{i}" for i in range(10)]


async def test_transient_search_failure_is_retried_then_succeeds() -> None:
    searcher = FakeSearcher(failures=2)
    outcome = await pipeline(searcher).process(records(post("a", "x")))
    assert len(outcome.results) == 1 and len(searcher.calls) == 3


async def test_dependency_down_through_every_retry_raises_for_the_caller_to_nack() -> None:
    searcher = FakeSearcher(failures=10)
    with pytest.raises(DependencyUnavailable):
        await pipeline(searcher).process(records(post("a", "x"), post("b", "y")))
    assert len(searcher.calls) == 3


async def test_a_post_that_breaks_the_encoder_is_dead_lettered_alone() -> None:
    # The pipeline raises; the adapter's one owner of failures isolates the post.
    searcher = FakeSearcher()
    encoder = FakeEncoder(fail_on="BOOM")
    batch = records(post("a", "fine"), post("b", "BOOM here"), post("c", "also fine"))
    with pytest.raises(RuntimeError, match="encoder exploded"):
        await pipeline(searcher, encoder).process(batch)
    outcome = await process_isolating(batch, pipeline(searcher, encoder).process, BatchOutcome)
    assert sorted(r.post_id for r in outcome.results) == ["a", "c"]
    assert [(d.reason, d.offset) for d in outcome.dead_letters] == [("processing_error", 1)]
    assert "encoder exploded" in outcome.dead_letters[0].error


async def test_an_outage_is_never_isolated_record_by_record() -> None:
    calls = []

    async def down(batch: object) -> BatchOutcome:
        calls.append(batch)
        raise DependencyUnavailable("postgres is down")

    with pytest.raises(DependencyUnavailable):
        await process_isolating(records(post("a", "x"), post("b", "y")), down, BatchOutcome)
    assert len(calls) == 1


async def test_an_outage_that_escaped_the_retries_is_never_a_dead_letter() -> None:
    # Postgres went away between the batch's first try and a record's try alone (the CI failure
    # of stop 39: a PoolTimeout outside the pipeline's retries dead-lettered post-25).
    class PoolTimeout(Exception):
        pass

    calls = []

    async def flaky(batch: list[object]) -> BatchOutcome:
        calls.append(len(batch))
        raise (RuntimeError("odd") if len(batch) > 1 else PoolTimeout("no connection"))

    batch = records(post("a", "x"), post("b", "y"))
    with pytest.raises(DependencyUnavailable, match="PoolTimeout"):
        await process_isolating(batch, flaky, BatchOutcome, outages=(PoolTimeout,))
    assert calls == [2, 1], "the first record's outage stops the splitting"
    # Not named an outage, the same exception is the record's fault.
    outcome = await process_isolating(batch, flaky, BatchOutcome)
    assert [d.reason for d in outcome.dead_letters] == ["processing_error", "processing_error"]


async def test_a_model_switch_never_lands_inside_a_batch() -> None:
    encoder = FakeEncoder()
    models = FakeModels(ServingModel("v1", encoder.dimension, encoder))
    searcher = FakeSearcher()
    pipe = MatchPipeline(models, searcher, config())

    original = encoder.encode_queries

    def switching(texts: list[str]) -> object:
        # The switch happens while the batch is being encoded.
        models.model = ServingModel("v2", encoder.dimension, encoder)
        return original(texts)

    encoder.encode_queries = switching  # type: ignore[method-assign]
    first = await pipe.process(records(post("a", "x"), post("b", "y")))
    assert {r.model_version for r in first.results} == {"v1"}
    assert searcher.calls[0][0] == "v1"
    second = await pipe.process(records(post("c", "z")))
    assert {r.model_version for r in second.results} == {"v2"}


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(attempts=6, initial_s=0.5, max_s=4.0)
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0]
    for attempt, ceiling in enumerate(ceilings, 1):
        delay = policy.delay(attempt)
        assert ceiling / 2 <= delay <= ceiling


async def test_language_is_detected_when_missing_and_the_versions_decisions_reach_the_searcher() -> None:
    from tests.unit.test_decisions import cosine_is_probability
    from worker.retrieval.decision import Decisions

    searcher = FakeSearcher()
    encoder = FakeEncoder()
    decisions = Decisions(cosine_is_probability(), {("*", "match"): 0.5, ("es", "match"): 0.9})
    models = FakeModels(ServingModel("v1", encoder.dimension, encoder, decisions))
    pipe = MatchPipeline(models, searcher, config(), detect_language=lambda text: "es" if "hola" in text else None)
    outcome = await pipe.process(
        records(post("a", "hola amigos"), json.dumps({"id": "b", "text": "x", "lang": "en"}).encode(), post("c", "zz"))
    )
    by_id = {r.post_id: r for r in outcome.results}
    assert (by_id["a"].lang, by_id["a"].lang_detected) == ("es", True)
    assert (by_id["b"].lang, by_id["b"].lang_detected) == ("en", False)
    assert (by_id["c"].lang, by_id["c"].lang_detected) == (None, False)
    assert searcher.langs == ["es", "en", None]
    assert searcher.decisions == decisions


async def test_text_read_in_a_posts_image_is_searched_as_read_text() -> None:
    from worker.core.images import ImageConfig, ImageMatching
    from worker.domain.images import ImageRead

    class Reader:
        """Every image read, with text in it (no hash: nothing to look up by picture)."""

        async def read(self, images, *, ocr=True, ocr_until=None):  # type: ignore[no-untyped-def]
            return [ImageRead(i, text="drinking bleach cures covid", text_confidence=91.0) for i in range(len(images))]

        async def close(self) -> None:
            return None

    searcher = FakeSearcher()
    encoder = FakeEncoder()
    images = ImageMatching(Reader(), index=None, config=ImageConfig())  # type: ignore[arg-type]
    models = FakeModels(ServingModel("v1", encoder.dimension, encoder))
    body = {"id": "a", "text": "look at this", "images": [{"url": "https://cdn.example/meme.jpg"}]}
    outcome = await MatchPipeline(models, searcher, config(), images=images).process(records(json.dumps(body).encode()))
    assert len(outcome.results) == 1 and outcome.results[0].images[0].text == "drinking bleach cures covid"
    assert searcher.read == [[False], [True]]  # the post's text typed, then its image's text as read
