"""Commands that run things: the demo, the local stack, a post into it, and the worker."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from worker.cli.common import STATE_FILE, console, err, load_settings, local_services, run
from worker.local.demo import DEMO_DIR

app = typer.Typer()

_COLUMNS = (
    ("post", 6),
    ("lang", 4),
    ("text", 40),
    ("best fact-check", 40),
    ("tier", 10),
    ("prob.", 5),
    ("model version", 22),
)


def _row(post: dict[str, Any], result: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False, expand=False)
    for _, width in _COLUMNS:
        table.add_column(width=width, overflow="ellipsis", no_wrap=True)
    best = result["matches"][0] if result["matches"] else None
    table.add_row(
        str(result["post_id"]),
        str(post.get("lang") or ""),
        str(post.get("text", "")) + (f" [+{len(post['images'])} image]" if post.get("images") else ""),
        (best.get("title") or best["claim"]) if best else "[dim]no match[/dim]",
        (best.get("tier") or "-") if best else "",
        f"{best['probability']:.2f}" if best and best.get("probability") is not None else "",
        result["model_version"],
    )
    return table


@app.command()
def demo(
    posts_file: Annotated[Path, typer.Option("--posts", help="Posts JSONL.")] = DEMO_DIR / "posts.jsonl",
    fact_checks_file: Annotated[Path, typer.Option("--fact-checks", help="Fact-checks JSONL.")] = DEMO_DIR
    / "factchecks.jsonl",
    model: Annotated[str | None, typer.Option(help="Model directory or hub name.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every result.")] = 180.0,
) -> None:
    """Start a local broker and Postgres, index the sample fact-checks, stream the sample posts, print matches."""
    from worker.adapter.conversations import stream_and_collect
    from worker.local.demo import MALFORMED, is_demo_file, prepare_database, running_worker
    from worker.retrieval.evaluation import load_jsonl

    wall = time.perf_counter()
    posts = load_jsonl(posts_file)
    if is_demo_file(posts_file, "posts.jsonl"):
        from worker.local.demo_images import demo_image_posts

        posts += demo_image_posts()  # a repost of a debunked photo, a meme, an unrelated photo
    by_id = {str(p["id"]): p for p in posts}
    with local_services(None) as (bootstrap, url):
        settings = load_settings(kafka_bootstrap=bootstrap, database_url=url, model=model, metrics_port=0)

        async def go() -> tuple[dict[str, Any], list[Any], float]:
            await prepare_database(settings, fact_checks_file)
            async with contextlib.AsyncExitStack() as stack:
                with console.status("loading the model and indexing fact-checks..."):
                    await stack.enter_async_context(running_worker(settings))
                header = Table(show_header=True, box=None, pad_edge=False)
                for name, width in _COLUMNS:
                    header.add_column(name, width=width)
                console.print(header)
                started = time.perf_counter()
                results, dead = await stream_and_collect(
                    settings,
                    posts,
                    MALFORMED,
                    timeout,
                    on_result=lambda r: console.print(_row(by_id[r["post_id"]], r)),
                    on_dead_letter=lambda d: console.print(
                        f"[yellow]dead letter[/yellow] {d['reason']}: {d['error'][:90]}"
                    ),
                )
                return results, dead, time.perf_counter() - started

        results, dead, seconds = run(go())
    summarise(posts, results, dead, seconds, time.perf_counter() - wall)


def summarise(
    posts: list[dict[str, Any]], results: dict[str, dict[str, Any]], dead: list[Any], seconds: float, wall: float
) -> None:
    """The demo's last word: what came back and how right it was; exit 1 when a message is missing."""
    from worker.local.demo import MALFORMED, abstentions, correct_best_matches

    hits, labelled = correct_best_matches(posts, results)
    quiet, unlabelled = abstentions(posts, results)
    console.print(
        f"\n{len(results)}/{len(posts)} posts matched and published, {len(dead)}/{len(MALFORMED)} malformed messages "
        f"dead-lettered; best match correct for {hits}/{labelled} posts with a known fact-check; "
        f"no match for {quiet}/{unlabelled} posts that have none. "
        f"Stream time {seconds:.1f}s, wall time {wall:.1f}s."
    )
    if len(results) != len(posts) or len(dead) != len(MALFORMED):
        err.print("[red]demo incomplete: not every message came back[/red]")
        raise typer.Exit(1)


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option(help="Where Postgres keeps its data.")] = Path(".factmatch/pg"),
    fact_checks_file: Annotated[Path | None, typer.Option("--fact-checks")] = DEMO_DIR / "factchecks.jsonl",
    model: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Run the local stack and a worker until Ctrl-C; `factmatch post` talks to it."""
    from worker.local.demo import local_console, prepare_database, running_worker

    with local_services(data_dir) as (bootstrap, url):
        settings = load_settings(kafka_bootstrap=bootstrap, database_url=url, model=model)
        STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
        STATE_FILE.write_text(f"FACTMATCH_KAFKA_BOOTSTRAP={bootstrap}\nFACTMATCH_DATABASE_URL={url}\n")

        async def go() -> None:
            await prepare_database(settings, fact_checks_file)
            async with running_worker(settings) as runtime, local_console(settings) as (url, name, password):
                if settings.metrics_enabled:
                    base = f"http://127.0.0.1:{runtime.health.port}"
                    console.print(f"metrics: {base}/metrics  health: {base}/healthz  readiness: {base}/readyz")
                console.print(f"moderators' console: {url}  (sign in as {name} / {password}, an admin)")
                console.print(
                    f'[green]ready[/green]: post with `factmatch post "some text"`, or produce JSON to '
                    f"'{settings.topic_posts}' on {bootstrap}; results on '{settings.topic_matches}'. Ctrl-C stops."
                )
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await stop.wait()

        try:
            run(go())
        finally:
            STATE_FILE.unlink(missing_ok=True)
    console.print("stopped")


@app.command()
def post(
    text: Annotated[str, typer.Argument(help="The post's text.")],
    post_id: Annotated[str | None, typer.Option("--id")] = None,
    lang: Annotated[str | None, typer.Option()] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the result and print it.")] = True,
    timeout: Annotated[float, typer.Option()] = 30.0,
) -> None:
    """Send one post to the posts topic (of `factmatch up`, or FACTMATCH_KAFKA_BOOTSTRAP) and print its result."""
    import json

    from worker.adapter.conversations import send_post
    from worker.wire import Post

    message = Post(id=post_id or f"cli-{uuid.uuid4().hex[:12]}", text=text, lang=lang, platform="cli")
    result = run(send_post(load_settings(), message, wait_s=timeout if wait else None))
    if not wait:
        console.print(f"sent {message.id}")
    elif result is None:
        err.print(f"[red]no result for {message.id} within {timeout:.0f}s[/red]")
        raise typer.Exit(1)
    else:
        console.print_json(json.dumps(result))


@app.command()
def worker() -> None:
    """Run the worker (the same app as `faststream run worker.app:app`)."""
    from worker.adapter.kafka import KafkaUnavailable
    from worker.app import create_app

    run(create_app(load_settings()).run(), failures=(KafkaUnavailable,))
