"""The baseline a user would write by hand: poll, encode, one pgvector query per post, produce, commit.

Deliberately plain (the libraries' documented calls, nothing from this project) so the
worker is compared with what it replaces. Run by benchmarks/performance.py in its own process.
"""

from __future__ import annotations

import json
from typing import Any


def hand_loop(
    bootstrap: str,
    topic_in: str,
    topic_out: str,
    dsn: str,
    model_path: str,
    version: str,
    dimension: int,
    ef_search: int,
    stop: Any,
) -> None:
    import numpy as np
    import psycopg
    from confluent_kafka import Consumer, Producer
    from pgvector.psycopg import register_vector
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu", local_files_only=True)
    prompt = (model.prompts or {}).get("query") or ""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"hand-{topic_in}", "auto.offset.reset": "earliest",
         "enable.auto.commit": False}
    )  # fmt: skip
    consumer.subscribe([topic_in])
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    conn = psycopg.connect(dsn, autocommit=True)
    register_vector(conn)
    conn.execute(f"SET hnsw.ef_search = {int(ef_search)}")
    # The same expression the HNSW index is built on, or the planner cannot use it.
    kind = "vector" if dimension <= 2000 else "halfvec"
    query = (
        f"SELECT fact_check_id, 1 - (embedding::{kind}({dimension}) <=> %s::{kind}({dimension}))"
        f" FROM fact_check_embeddings WHERE model_version = '{version}'"
        f" ORDER BY embedding::{kind}({dimension}) <=> %s::{kind}({dimension}) LIMIT 5"
    )
    while not stop.is_set():
        messages = [m for m in consumer.consume(num_messages=32, timeout=0.05) if m.error() is None]
        if not messages:
            continue
        posts = [json.loads(m.value()) for m in messages]
        vectors = model.encode(
            [p["text"] for p in posts], prompt=prompt, batch_size=32, normalize_embeddings=True
        ).astype(np.float32)
        for post, vector in zip(posts, vectors, strict=True):
            rows = conn.execute(query, (vector, vector)).fetchall()
            result = {"post_id": post["id"], "matches": [{"fact_check_id": r[0], "score": float(r[1])} for r in rows]}
            producer.produce(topic_out, json.dumps(result).encode(), key=str(post["id"]).encode())
        producer.flush()
        consumer.commit(asynchronous=False)
    consumer.close()
    conn.close()
