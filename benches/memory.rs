//! The memory store at scale, on random unit vectors of 384 dimensions (MiniLM's size; no model
//! needed): the insert rate (one durable commit per item, and in batches), recall of the top 10
//! among 10,000 and 100,000 items (p50 and p99, the query's embedding excluded), the first
//! search's load of the vectors and the reload after another process wrote, bytes per item on
//! disk, and the search kernels alone (the plain `f32` scan against the quantized first pass).
//!
//! If all-MiniLM-L6-v2's files are already in the model cache (nothing is fetched), it also
//! measures embedding (one text at a time, and batched) and recall including the query's
//! embedding.
//!
//! Then the same figures for the PostgreSQL store (pgvector, exact search in the server) on a
//! throwaway local server with PostgreSQL's default durability (`fsync` on), started as the
//! store's tests start theirs (the `pgserver` wheel, fetched with pip into troupe's cache when
//! missing); skipped, saying why, when it cannot be started.
//!
//! Run with `cargo bench --bench memory`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use troupe::memory::embedder::{DIMENSIONS, Embedder, EmbedderFiles};
use troupe::memory::postgres::PostgresStore;
use troupe::memory::postgres::server::{Durability, LocalServer};
use troupe::memory::search::{Matrix, exact_top_k};
use troupe::memory::sqlite::SqliteStore;
use troupe::memory::store::{Author, Filter, ItemKind, MemoryStore, NewItem, Provenance, Query, Scope, ScopeFilter};
use troupe::model::files::{Cache, MINILM};

/// Items added one by one, each its own durable commit.
const SINGLE_ADDS: usize = 1_000;
/// Items per `add_many` when filling the store.
const BATCH: usize = 1_000;
/// Store sizes at which recall is measured.
const SIZES: [usize; 2] = [10_000, 100_000];
/// Queries per measurement.
const QUERIES: usize = 300;
/// The digest the bench's vectors claim (they come from no model).
const EMBEDDER: &str = "sha256:bench-random-vectors";

/// Deterministic pseudo-random numbers (xorshift), so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn unit(&mut self) -> Vec<f32> {
        normalized((0..DIMENSIONS).map(|_| self.next()).collect())
    }

    /// A unit vector near `center`: cosine about 0.8 with it, like texts on one topic.
    fn near(&mut self, center: &[f32]) -> Vec<f32> {
        normalized(center.iter().map(|c| c + self.next() * 0.075).collect())
    }
}

fn normalized(v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn item(i: usize, embedding: Vec<f32>) -> NewItem {
    let lesson = i % 4 != 0;
    NewItem {
        kind: if lesson { ItemKind::Lesson } else { ItemKind::Episode },
        author: if lesson { Author::Agent } else { Author::Reflection },
        scope: if i % 3 == 0 { Scope::Global } else { Scope::Expert(format!("expert-{}", i % 7)) },
        provenance: Provenance {
            run_id: Some(format!("2026-05-01T10-00-00-{:04}", i / 50)),
            seq: Some(i as u64),
            expert: None,
        },
        text: format!("Lesson {i}: when the checks fail on a flaky network call, retry once before reporting."),
        data: if lesson {
            serde_json::Value::Null
        } else {
            serde_json::json!({"outcome": "passed", "duration_ms": 1234})
        },
        created_ms: 1_714_557_600_000 + i as i64,
        embedding,
        embedder: EMBEDDER.into(),
    }
}

/// p50 and p99 of `samples`, in milliseconds.
fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)].as_secs_f64() * 1e3;
    (at(50), at(99))
}

fn query(vector: &[f32], filter: Filter) -> Query<'_> {
    Query { vector, embedder: EMBEDDER, k: 10, filter, min_score: -1.0 }
}

fn time_searches(store: &dyn MemoryStore, rng: &mut Rng, filter: &Filter) -> (f64, f64) {
    let mut samples = Vec::with_capacity(QUERIES);
    for _ in 0..QUERIES {
        let q = rng.unit();
        let started = Instant::now();
        let hits = store.search(&query(&q, filter.clone())).unwrap();
        samples.push(started.elapsed());
        assert_eq!(hits.len(), 10);
    }
    percentiles(&mut samples)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".troupe/memory.sqlite");
    let store = SqliteStore::open(&path).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    let mut bulk = Bulk::after_single_adds("", &store, &mut rng);
    for size in SIZES {
        bulk.fill("", &store, &mut rng, size);
        let mut added = bulk.added;

        // The first search after the other connection below wrote, or after opening, loads every vector.
        let fresh = SqliteStore::open(&path).unwrap();
        let q = rng.unit();
        let started = Instant::now();
        fresh.search(&query(&q, Filter::default())).unwrap();
        println!("{size} items: first search (loads the vectors) {:.0} ms", started.elapsed().as_secs_f64() * 1e3);

        let (p50, p99) = time_searches(&fresh, &mut rng, &Filter::default());
        println!("{size} items: recall top-10, p50 {p50:.2} ms, p99 {p99:.2} ms");
        let visible =
            Filter { kind: Some(ItemKind::Lesson), author: None, scope: ScopeFilter::VisibleTo("expert-2".into()) };
        let (p50, p99) = time_searches(&fresh, &mut rng, &visible);
        println!("{size} items: recall top-10 of an expert's visible lessons, p50 {p50:.2} ms, p99 {p99:.2} ms");

        // Another connection writes one item: the next search applies it from the change log.
        store.add(item(added, rng.unit())).unwrap();
        added += 1;
        let started = Instant::now();
        fresh.search(&query(&q, Filter::default())).unwrap();
        println!(
            "{size} items: first search after another process wrote one item (applied from the change log) {:.0} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        // This store's own write does not reload.
        fresh.add(item(added, rng.unit())).unwrap();
        added += 1;
        let started = Instant::now();
        fresh.search(&query(&q, Filter::default())).unwrap();
        println!("{size} items: first search after its own write {:.2} ms", started.elapsed().as_secs_f64() * 1e3);
        bulk.added = added;
    }

    let items = store.stats().unwrap().items;
    drop(store); // the last connection checkpoints the log into the file
    let bytes = file_size(&path);
    println!(
        "on disk: {items} items in {:.1} MB = {:.0} bytes per item (the vector alone is {} bytes)",
        bytes as f64 / 1e6,
        bytes as f64 / items as f64,
        DIMENSIONS * 4
    );

    kernels(&mut rng);
    embedder(&path);
    postgres();
}

/// Items added so far, and the time and count of the batched adds among them.
struct Bulk {
    added: usize,
    time: Duration,
    items: usize,
}

impl Bulk {
    /// Durable adds, one commit (and fsync) each: their rate and latency, printed.
    fn after_single_adds(label: &str, store: &dyn MemoryStore, rng: &mut Rng) -> Bulk {
        let mut samples = Vec::with_capacity(SINGLE_ADDS);
        let started = Instant::now();
        for i in 0..SINGLE_ADDS {
            let item = item(i, rng.unit());
            let one = Instant::now();
            store.add(item).unwrap();
            samples.push(one.elapsed());
        }
        let seconds = started.elapsed().as_secs_f64();
        let (p50, p99) = percentiles(&mut samples);
        println!(
            "{label}add, one durable commit each: {SINGLE_ADDS} items in {seconds:.2} s = {:.0} items/s (p50 {p50:.2} ms, p99 {p99:.2} ms)",
            SINGLE_ADDS as f64 / seconds
        );
        Bulk { added: SINGLE_ADDS, time: Duration::ZERO, items: 0 }
    }

    /// Adds batches until the store holds `size` items; prints the batched rate so far.
    fn fill(&mut self, label: &str, store: &dyn MemoryStore, rng: &mut Rng, size: usize) {
        while self.added < size {
            let items: Vec<NewItem> =
                (self.added..(self.added + BATCH).min(size)).map(|i| item(i, rng.unit())).collect();
            let n = items.len();
            let started = Instant::now();
            store.add_many(items).unwrap();
            self.time += started.elapsed();
            self.items += n;
            self.added += n;
        }
        println!(
            "{label}add_many, batches of {BATCH}: {:.0} items/s so far ({} items in {:.2} s)",
            self.items as f64 / self.time.as_secs_f64(),
            self.items,
            self.time.as_secs_f64()
        );
    }
}

/// Insert rates, recall at 10,000 and 100,000 items, and bytes per item, for the PostgreSQL store.
fn postgres() {
    let cache = match troupe::model::files::cache_dir() {
        Ok(models) => models.with_file_name("postgres"),
        Err(e) => return println!("postgres: skipped ({e})"),
    };
    let server = match LocalServer::start(&cache, Durability::Full) {
        Ok(server) => server,
        Err(e) => return println!("postgres: skipped ({e})"),
    };
    println!("postgres: local server (PostgreSQL 16, pgvector 0.6) started in {:.2?}", server.started_in());
    let store = PostgresStore::connect(&server.create_database().unwrap()).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    let mut bulk = Bulk::after_single_adds("postgres: ", &store, &mut rng);
    for size in SIZES {
        bulk.fill("postgres: ", &store, &mut rng, size);
        let (p50, p99) = time_searches(&store, &mut rng, &Filter::default());
        println!("postgres: {size} items: recall top-10, p50 {p50:.2} ms, p99 {p99:.2} ms");
        let visible =
            Filter { kind: Some(ItemKind::Lesson), author: None, scope: ScopeFilter::VisibleTo("expert-2".into()) };
        let (p50, p99) = time_searches(&store, &mut rng, &visible);
        println!(
            "postgres: {size} items: recall top-10 of an expert's visible lessons, p50 {p50:.2} ms, p99 {p99:.2} ms"
        );
        let stats = store.stats().unwrap();
        println!(
            "postgres: {size} items: pg_total_relation_size {:.1} MB = {:.0} bytes per item",
            stats.bytes as f64 / 1e6,
            stats.bytes as f64 / stats.items as f64
        );
    }
}

/// The two scans on 100,000 rows, random and clustered, away from SQLite.
fn kernels(rng: &mut Rng) {
    let n = 100_000;
    let centers: Vec<Vec<f32>> = (0..100).map(|_| rng.unit()).collect();
    for (name, rows) in [
        ("random", (0..n).map(|_| rng.unit()).collect::<Vec<_>>()),
        ("clustered (100 topics, cosine ~0.8 within one)", (0..n).map(|i| rng.near(&centers[i % 100])).collect()),
    ] {
        let mut matrix = Matrix::new(DIMENSIONS);
        for row in &rows {
            matrix.push(row).unwrap();
        }
        let flat: Vec<f32> = rows.concat();
        drop(rows);
        let (mut plain, mut quantized) = (Vec::new(), Vec::new());
        for i in 0..QUERIES {
            let q = if name == "random" { rng.unit() } else { rng.near(&centers[i % 100]) };
            let started = Instant::now();
            let a = exact_top_k(&flat, DIMENSIONS, &q, 10, -1.0, |_| true);
            plain.push(started.elapsed());
            let started = Instant::now();
            let b = matrix.top_k(&q, 10, -1.0, |_| true);
            quantized.push(started.elapsed());
            assert_eq!(a, b, "the quantized scan must return exactly the plain scan's top 10");
        }
        let (p50, p99) = percentiles(&mut plain);
        let (q50, q99) = percentiles(&mut quantized);
        println!(
            "kernel, {n} {name}: f32 scan p50 {p50:.2} ms p99 {p99:.2} ms; i8 first pass + exact rescoring p50 {q50:.2} ms p99 {q99:.2} ms"
        );
    }
}

/// Embedding figures, only if the model's files are already in the cache.
fn embedder(path: &Path) {
    let cache = match Cache::default_location() {
        Ok(cache) => cache,
        Err(e) => return println!("embedder: skipped ({e})"),
    };
    if !cache.status(&MINILM).is_verified() {
        return println!("embedder: skipped (all-MiniLM-L6-v2 is not in the model cache {})", cache.root().display());
    }
    let files = EmbedderFiles::in_dir(cache.dir(&MINILM)).unwrap();
    let embedder = Embedder::load(&files).unwrap();
    let texts: Vec<String> =
        (0..256).map(|i| format!("Agent {i} finished its subtask and reported the result to its parent.")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    embedder.embed(&refs[..4]).unwrap(); // warm up

    let mut single = Vec::new();
    let started = Instant::now();
    for text in &refs[..64] {
        let one = Instant::now();
        embedder.embed(&[text]).unwrap();
        single.push(one.elapsed());
    }
    let rate = 64.0 / started.elapsed().as_secs_f64();
    let (p50, p99) = percentiles(&mut single);
    println!("embedder: one text at a time {rate:.0} texts/s (p50 {p50:.1} ms, p99 {p99:.1} ms)");
    let started = Instant::now();
    embedder.embed(&refs).unwrap();
    println!("embedder: batched (32 a pass) {:.0} texts/s", 256.0 / started.elapsed().as_secs_f64());

    let store = SqliteStore::open(path).unwrap();
    let items = store.stats().unwrap().items;
    let questions = [
        "How do I make the flaky network check pass?",
        "What did the critic say about the last report?",
        "Which model answered fastest in the matrix run?",
        "Retry once before reporting a failure.",
    ];
    let warm = embedder.embed(&[questions[0]]).unwrap().remove(0);
    store.search(&query(&warm, Filter::default())).unwrap(); // loads the vectors
    let mut samples = Vec::new();
    for i in 0..100 {
        let started = Instant::now();
        let vector = embedder.embed(&[questions[i % questions.len()]]).unwrap().remove(0);
        // The stored vectors claim the bench's digest; the timing is the same.
        store.search(&query(&vector, Filter::default())).unwrap();
        samples.push(started.elapsed());
    }
    let (p50, p99) = percentiles(&mut samples);
    println!("{items} items: recall top-10 including the query's embedding, p50 {p50:.1} ms, p99 {p99:.1} ms");
}
