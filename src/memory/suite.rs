//! The contract every [`MemoryStore`] backend must meet, as test functions over `&dyn
//! MemoryStore`. A backend's tests run them all with [`store_suite!`], given an expression that
//! makes a fresh, empty store (and whatever must live as long as it: a temporary folder, a
//! database schema).

use crate::memory::embedder::cosine;
use crate::memory::store::{
    Author, DUPLICATE_THRESHOLD, Filter, ItemKind, MemoryError, MemoryStore, NewItem, Provenance, Query, Remembered,
    Scope, ScopeFilter,
};

/// One `#[test]` per check, each on a store made by `$make`, which must evaluate to
/// `(guard, store)` where `store: impl MemoryStore` and `guard` outlives it.
macro_rules! store_suite {
    ($make:expr) => {
        $crate::memory::suite::store_suite!(@tests $make;
            add_then_get_returns_what_was_stored,
            update_replaces_text_and_vector,
            delete_forgets_for_good_and_ids_are_not_reused,
            list_filters_and_orders_newest_first,
            search_ranks_best_first_with_k_and_min_score,
            search_filters_by_scope_kind_and_author,
            search_agrees_with_a_plain_scan,
            other_embedders_wait_for_reembedding,
            record_use_counts_runs_and_successes,
            near_duplicates_merge_into_the_older_item,
            bad_input_is_refused_with_typed_errors,
            add_many_is_all_or_nothing,
            stats_count_items_and_bytes,
        );
    };
    (@tests $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let (_guard, store) = $make;
                $crate::memory::suite::$check(&store);
            }
        )*
    };
}
pub(crate) use store_suite;

const DIMS: usize = 8;
const EMBEDDER: &str = "sha256:test-embedder";

/// A unit vector whose cosine with [`axis`] is `c` (and with [`other_axis`] is √(1 − c²)).
fn at(c: f32) -> Vec<f32> {
    let mut v = vec![0.0; DIMS];
    v[0] = c;
    v[1] = (1.0 - c * c).max(0.0).sqrt();
    v
}

fn axis() -> Vec<f32> {
    at(1.0)
}

fn lesson(text: &str, embedding: Vec<f32>) -> NewItem {
    NewItem {
        kind: ItemKind::Lesson,
        author: Author::Agent,
        scope: Scope::Global,
        provenance: Provenance::default(),
        text: text.into(),
        data: serde_json::Value::Null,
        created_ms: 1_000,
        embedding,
        embedder: EMBEDDER.into(),
    }
}

/// The embedder digest of the backends' own tests' items.
pub(crate) const BACKEND_EMBEDDER: &str = "sha256:test";

/// A global lesson by the user, as the backends' own tests write them.
pub(crate) fn user_lesson(text: &str, embedding: Vec<f32>) -> NewItem {
    NewItem { author: Author::User, created_ms: 1, embedder: BACKEND_EMBEDDER.into(), ..lesson(text, embedding) }
}

/// The texts of the ten items most similar to `vector`, best first, whatever their score.
pub(crate) fn found(store: &dyn MemoryStore, vector: &[f32]) -> Vec<String> {
    let query = Query { vector, embedder: BACKEND_EMBEDDER, k: 10, filter: Filter::default(), min_score: -1.0 };
    store.search(&query).unwrap().into_iter().map(|h| h.item.text).collect()
}

fn query(vector: &[f32], k: usize) -> Query<'_> {
    Query { vector, embedder: EMBEDDER, k, filter: Filter::default(), min_score: -1.0 }
}

fn texts(hits: &[crate::memory::store::Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.item.text.as_str()).collect()
}

pub(crate) fn add_then_get_returns_what_was_stored(store: &dyn MemoryStore) {
    let episode = NewItem {
        kind: ItemKind::Episode,
        author: Author::Reflection,
        scope: Scope::Expert("coder".into()),
        provenance: Provenance {
            run_id: Some("2026-05-01T10-00-00-abc".into()),
            seq: Some(42),
            expert: Some("coder".into()),
        },
        text: "Ünïcödé task — 日本語 🦀 with \"quotes\" and\nnewlines".into(),
        data: serde_json::json!({"outcome": "passed", "checks": [true, false], "usage": {"tokens": 1234}}),
        created_ms: 1_714_557_600_000,
        embedding: at(0.3),
        embedder: EMBEDDER.into(),
    };
    let stored = store.add(episode.clone()).unwrap();
    assert!(stored.id > 0);
    assert_eq!((stored.uses, stored.successes, stored.last_used_ms), (0, 0, None));
    let got = store.get(stored.id).unwrap().expect("the item just added");
    assert_eq!(got, stored);
    assert_eq!(got.text, episode.text);
    assert_eq!(got.provenance, episode.provenance);
    assert_eq!(got.data, episode.data);
    assert_eq!(got.scope, Scope::Expert("coder".into()));
    // Bit for bit: the store must not round vectors.
    assert_eq!(
        got.embedding.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        episode.embedding.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(store.get(stored.id + 1000).unwrap(), None);
}

pub(crate) fn update_replaces_text_and_vector(store: &dyn MemoryStore) {
    let a = store.add(lesson("old wording", at(0.1))).unwrap();
    let b = store.add(lesson("unrelated", at(0.5))).unwrap();
    // Search once first, so a backend that caches vectors must keep its cache in step.
    assert_eq!(texts(&store.search(&query(&axis(), 1)).unwrap()), vec!["unrelated"]);
    let updated = store.update(a.id, "new wording", &at(0.9), EMBEDDER).unwrap();
    assert_eq!((updated.id, updated.text.as_str(), updated.created_ms), (a.id, "new wording", a.created_ms));
    assert_eq!(store.get(a.id).unwrap().unwrap().embedding, at(0.9));
    let hits = store.search(&query(&axis(), 2)).unwrap();
    assert_eq!(texts(&hits), vec!["new wording", "unrelated"]);
    assert!((hits[0].score - 0.9).abs() < 1e-5);
    assert!(matches!(store.update(b.id + 100, "x", &axis(), EMBEDDER), Err(MemoryError::NotFound(_))));
}

pub(crate) fn delete_forgets_for_good_and_ids_are_not_reused(store: &dyn MemoryStore) {
    let keep = store.add(lesson("keep", at(0.5))).unwrap();
    let forget = store.add(lesson("forget", at(0.99))).unwrap();
    assert_eq!(store.search(&query(&axis(), 1)).unwrap()[0].item.id, forget.id);
    assert!(store.delete(forget.id).unwrap());
    assert!(!store.delete(forget.id).unwrap(), "a second delete finds nothing");
    assert_eq!(store.get(forget.id).unwrap(), None);
    assert_eq!(texts(&store.search(&query(&axis(), 5)).unwrap()), vec!["keep"]);
    assert_eq!(store.list(&Filter::default(), 10).unwrap().len(), 1);
    let next = store.add(lesson("after", at(0.2))).unwrap();
    assert!(next.id > forget.id, "ids are never reused: {} after {}", next.id, forget.id);
    assert!(store.get(keep.id).unwrap().is_some());
}

pub(crate) fn list_filters_and_orders_newest_first(store: &dyn MemoryStore) {
    let add = |text: &str, kind, author, scope: Scope, created_ms| {
        store.add(NewItem { kind, author, scope, created_ms, ..lesson(text, at(0.5)) }).unwrap()
    };
    add("a", ItemKind::Lesson, Author::User, Scope::Global, 10);
    add("b", ItemKind::Episode, Author::Reflection, Scope::Expert("coder".into()), 30);
    add("c", ItemKind::Lesson, Author::Agent, Scope::Expert("coder".into()), 20);
    add("d", ItemKind::Lesson, Author::Notes, Scope::Expert("critic".into()), 40);
    add("e", ItemKind::Lesson, Author::Agent, Scope::Global, 20); // same time as c: newer id first
    let list = |filter: Filter, limit| -> Vec<String> {
        store.list(&filter, limit).unwrap().into_iter().map(|i| i.text).collect()
    };
    assert_eq!(list(Filter::default(), 10), ["d", "b", "e", "c", "a"]);
    assert_eq!(list(Filter::default(), 2), ["d", "b"]);
    assert_eq!(list(Filter::default(), 0), Vec::<String>::new());
    assert_eq!(list(Filter { kind: Some(ItemKind::Episode), ..Filter::default() }, 10), ["b"]);
    assert_eq!(list(Filter { author: Some(Author::Agent), ..Filter::default() }, 10), ["e", "c"]);
    assert_eq!(list(Filter { scope: ScopeFilter::Global, ..Filter::default() }, 10), ["e", "a"]);
    assert_eq!(list(Filter { scope: ScopeFilter::Expert("coder".into()), ..Filter::default() }, 10), ["b", "c"]);
    assert_eq!(
        list(Filter { scope: ScopeFilter::VisibleTo("critic".into()), ..Filter::default() }, 10),
        ["d", "e", "a"]
    );
    let lessons_for_coder =
        Filter { kind: Some(ItemKind::Lesson), author: None, scope: ScopeFilter::VisibleTo("coder".into()) };
    assert_eq!(list(lessons_for_coder, 10), ["e", "c", "a"]);
}

pub(crate) fn search_ranks_best_first_with_k_and_min_score(store: &dyn MemoryStore) {
    assert!(store.search(&query(&axis(), 5)).unwrap().is_empty(), "an empty store finds nothing");
    for (text, c) in [("c0.2", 0.2), ("c0.95", 0.95), ("c-0.5", -0.5), ("c0.6", 0.6), ("c0.8", 0.8)] {
        store.add(lesson(text, at(c))).unwrap();
    }
    let hits = store.search(&query(&axis(), 10)).unwrap();
    assert_eq!(texts(&hits), ["c0.95", "c0.8", "c0.6", "c0.2", "c-0.5"]);
    for (hit, want) in hits.iter().zip([0.95, 0.8, 0.6, 0.2, -0.5]) {
        assert!((hit.score - want).abs() < 1e-5, "{}: {}", hit.item.text, hit.score);
    }
    assert_eq!(texts(&store.search(&query(&axis(), 2)).unwrap()), ["c0.95", "c0.8"]);
    assert!(store.search(&query(&axis(), 0)).unwrap().is_empty());
    let x = axis();
    let floor = Query { min_score: 0.6, ..query(&x, 10) };
    assert_eq!(texts(&store.search(&floor).unwrap()), ["c0.95", "c0.8", "c0.6"]);
    let too_high = Query { min_score: 0.99, ..query(&x, 10) };
    assert!(store.search(&too_high).unwrap().is_empty());
}

pub(crate) fn search_filters_by_scope_kind_and_author(store: &dyn MemoryStore) {
    let add = |text: &str, kind, author, scope: Scope, c| {
        store.add(NewItem { kind, author, scope, ..lesson(text, at(c)) }).unwrap();
    };
    add("global lesson", ItemKind::Lesson, Author::User, Scope::Global, 0.5);
    add("coder lesson", ItemKind::Lesson, Author::Agent, Scope::Expert("coder".into()), 0.9);
    add("critic lesson", ItemKind::Lesson, Author::Agent, Scope::Expert("critic".into()), 0.99);
    add("coder episode", ItemKind::Episode, Author::Reflection, Scope::Expert("coder".into()), 0.7);
    let search = |filter: Filter| {
        let hits = store.search(&Query { filter, ..query(&axis(), 10) }).unwrap();
        hits.into_iter().map(|h| h.item.text).collect::<Vec<_>>()
    };
    assert_eq!(search(Filter::default()), ["critic lesson", "coder lesson", "coder episode", "global lesson"]);
    assert_eq!(
        search(Filter { scope: ScopeFilter::VisibleTo("coder".into()), ..Filter::default() }),
        ["coder lesson", "coder episode", "global lesson"]
    );
    assert_eq!(
        search(Filter { kind: Some(ItemKind::Lesson), author: None, scope: ScopeFilter::VisibleTo("coder".into()) }),
        ["coder lesson", "global lesson"]
    );
    assert_eq!(search(Filter { scope: ScopeFilter::Global, ..Filter::default() }), ["global lesson"]);
    assert_eq!(search(Filter { author: Some(Author::Reflection), ..Filter::default() }), ["coder episode"]);
    assert!(search(Filter { scope: ScopeFilter::Expert("nobody".into()), ..Filter::default() }).is_empty());
}

pub(crate) fn search_agrees_with_a_plain_scan(store: &dyn MemoryStore) {
    // Real-sized vectors, pseudo-random but fixed.
    let dims = 384;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut unit = || {
        let v: Vec<f32> = (0..dims)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect::<Vec<f32>>()
    };
    let items: Vec<NewItem> = (0..300).map(|i| lesson(&format!("item {i}"), unit())).collect();
    let stored = store.add_many(items).unwrap();
    for _ in 0..5 {
        let q = unit();
        let mut plain: Vec<(f32, i64)> = stored.iter().map(|item| (cosine(&item.embedding, &q), item.id)).collect();
        plain.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let hits = store.search(&query(&q, 10)).unwrap();
        assert_eq!(
            hits.iter().map(|h| h.item.id).collect::<Vec<_>>(),
            plain.iter().take(10).map(|p| p.1).collect::<Vec<_>>()
        );
        for (hit, (score, _)) in hits.iter().zip(&plain) {
            assert!((hit.score - score).abs() < 1e-5, "{} vs {score}", hit.score);
        }
    }
}

pub(crate) fn other_embedders_wait_for_reembedding(store: &dyn MemoryStore) {
    let current = store.add(lesson("current", at(0.5))).unwrap();
    let old = store
        .add(NewItem { embedder: "sha256:old".into(), embedding: vec![1.0, 0.0], ..lesson("old", at(0.9)) })
        .unwrap();
    assert_eq!(
        texts(&store.search(&query(&axis(), 10)).unwrap()),
        ["current"],
        "vectors of another embedder are never compared"
    );
    let stale = store.needing_reembedding(EMBEDDER, 10).unwrap();
    assert_eq!(stale.iter().map(|i| i.id).collect::<Vec<_>>(), vec![old.id]);
    assert_eq!(store.needing_reembedding("sha256:old", 10).unwrap()[0].id, current.id);
    assert!(store.needing_reembedding(EMBEDDER, 0).unwrap().is_empty());
    // Re-embedding is an update with the same text and the current embedder's vector.
    store.update(old.id, "old", &at(0.9), EMBEDDER).unwrap();
    assert!(store.needing_reembedding(EMBEDDER, 10).unwrap().is_empty());
    assert_eq!(texts(&store.search(&query(&axis(), 10)).unwrap()), ["old", "current"]);
}

pub(crate) fn record_use_counts_runs_and_successes(store: &dyn MemoryStore) {
    let a = store.add(lesson("a", at(0.5))).unwrap();
    let b = store.add(lesson("b", at(0.6))).unwrap();
    // One run recalling a twice counts once.
    assert_eq!(store.record_use(&[a.id, a.id, b.id], true, 5_000).unwrap(), 2);
    assert_eq!(store.record_use(&[a.id, b.id + 1000], false, 7_000).unwrap(), 1, "forgotten ids are skipped");
    assert_eq!(store.record_use(&[b.id], false, 3_000).unwrap(), 1);
    assert_eq!(store.record_use(&[], true, 9_000).unwrap(), 0);
    let a = store.get(a.id).unwrap().unwrap();
    assert_eq!((a.uses, a.successes, a.last_used_ms), (2, 1, Some(7_000)));
    let b = store.get(b.id).unwrap().unwrap();
    assert_eq!((b.uses, b.successes, b.last_used_ms), (2, 1, Some(5_000)), "an older use never moves the time back");
}

pub(crate) fn near_duplicates_merge_into_the_older_item(store: &dyn MemoryStore) {
    let first = NewItem {
        provenance: Provenance { run_id: Some("run-1".into()), seq: Some(7), expert: Some("coder".into()) },
        ..lesson("Run the tests first.", at(0.8))
    };
    let Remembered::Added(original) = store.add_or_merge(first, DUPLICATE_THRESHOLD).unwrap() else {
        panic!("an empty store has nothing to merge into")
    };
    store.record_use(&[original.id], true, 1_500).unwrap();
    // Same meaning, longer: merged into the original, which takes the longer text and its vector.
    let again = NewItem {
        provenance: Provenance { run_id: Some("run-2".into()), seq: Some(3), expert: None },
        created_ms: 2_000,
        ..lesson("Run the unit tests first, before editing.", at(0.79))
    };
    let Remembered::Merged { item, similarity } = store.add_or_merge(again, DUPLICATE_THRESHOLD).unwrap() else {
        panic!("a near-duplicate must merge")
    };
    assert!(similarity >= DUPLICATE_THRESHOLD, "{similarity}");
    assert_eq!(item.id, original.id);
    assert_eq!(item.provenance.run_id.as_deref(), Some("run-1"), "the older item's provenance is kept");
    assert_eq!(item.text, "Run the unit tests first, before editing.");
    assert_eq!((item.uses, item.successes, item.last_used_ms), (1, 1, Some(2_000)));
    assert_eq!(store.get(original.id).unwrap().unwrap(), item, "what merge returns is what is stored");
    assert_eq!(store.stats().unwrap().items, 1);
    // Shorter and similar: merged, the longer text stays.
    let shorter = store.add_or_merge(lesson("Test first.", at(0.81)), DUPLICATE_THRESHOLD).unwrap();
    assert_eq!(shorter.item().text, "Run the unit tests first, before editing.");
    // Dissimilar, or another scope or kind: a new item each.
    assert!(matches!(store.add_or_merge(lesson("far", at(0.0)), DUPLICATE_THRESHOLD).unwrap(), Remembered::Added(_)));
    let other_scope = NewItem { scope: Scope::Expert("critic".into()), ..lesson("Run the tests first.", at(0.8)) };
    assert!(matches!(store.add_or_merge(other_scope, DUPLICATE_THRESHOLD).unwrap(), Remembered::Added(_)));
    let episode = NewItem { kind: ItemKind::Episode, ..lesson("Run the tests first.", at(0.8)) };
    assert!(matches!(store.add_or_merge(episode, DUPLICATE_THRESHOLD).unwrap(), Remembered::Added(_)));
    assert_eq!(store.stats().unwrap().items, 4);
    assert!(matches!(store.merge(original.id + 1000, &lesson("x", axis())), Err(MemoryError::NotFound(_))));
}

pub(crate) fn bad_input_is_refused_with_typed_errors(store: &dyn MemoryStore) {
    assert!(matches!(store.add(lesson("", axis())), Err(MemoryError::EmptyText)));
    assert!(matches!(store.add(lesson("  \n", axis())), Err(MemoryError::EmptyText)));
    assert!(matches!(store.add(lesson("x", vec![])), Err(MemoryError::BadVector(_))));
    assert!(matches!(store.add(lesson("x", vec![f32::NAN; DIMS])), Err(MemoryError::BadVector(_))));
    assert!(matches!(store.add(lesson("x", vec![1.0; DIMS])), Err(MemoryError::BadVector(_))));
    assert!(matches!(
        store.add(NewItem { embedder: String::new(), ..lesson("x", axis()) }),
        Err(MemoryError::NoEmbedder)
    ));
    let item = store.add(lesson("x", axis())).unwrap();
    let other = store.add(lesson("z", at(0.5))).unwrap();
    // One embedder, one length.
    let short = vec![1.0, 0.0];
    let Err(MemoryError::Dimensions { expected, got, .. }) = store.add(lesson("y", short.clone())) else {
        panic!("a vector of another length from the same embedder must be refused")
    };
    assert_eq!((expected, got), (DIMS, 2));
    assert!(matches!(store.update(item.id, "x", &short, EMBEDDER), Err(MemoryError::Dimensions { .. })));
    assert!(matches!(store.search(&query(&short, 3)), Err(MemoryError::Dimensions { .. })));
    assert!(matches!(store.update(item.id, "", &axis(), EMBEDDER), Err(MemoryError::EmptyText)));
    assert!(matches!(store.search(&query(&[], 3)), Err(MemoryError::BadVector(_))));
    assert_eq!(store.stats().unwrap().items, 2, "nothing refused was stored");
    assert_eq!(store.get(item.id).unwrap().unwrap().embedding, axis(), "nor changed");
    // The sole item of an embedder may change length: nothing else would disagree.
    store.delete(other.id).unwrap();
    store.update(item.id, "x", &short, EMBEDDER).unwrap();
    assert_eq!(store.search(&query(&short, 3)).unwrap()[0].item.id, item.id);
}

pub(crate) fn add_many_is_all_or_nothing(store: &dyn MemoryStore) {
    let stored = store.add_many(vec![lesson("one", at(0.1)), lesson("two", at(0.2))]).unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored[0].id < stored[1].id);
    assert_eq!(store.get(stored[1].id).unwrap().unwrap().text, "two");
    assert!(store.add_many(vec![lesson("three", at(0.3)), lesson("", at(0.4))]).is_err());
    assert!(store.add_many(vec![lesson("three", at(0.3)), lesson("bad length", vec![1.0, 0.0])]).is_err());
    assert_eq!(store.stats().unwrap().items, 2, "a refused batch stores nothing");
    assert!(store.add_many(Vec::new()).unwrap().is_empty());
    assert_eq!(texts(&store.search(&query(&axis(), 5)).unwrap()), ["two", "one"]);
}

pub(crate) fn stats_count_items_and_bytes(store: &dyn MemoryStore) {
    let empty = store.stats().unwrap();
    assert_eq!((empty.items, empty.lessons, empty.episodes), (0, 0, 0));
    store.add(lesson("a", at(0.1))).unwrap();
    store.add(NewItem { kind: ItemKind::Episode, ..lesson("b", at(0.2)) }).unwrap();
    store.add(lesson("c", at(0.3))).unwrap();
    let stats = store.stats().unwrap();
    assert_eq!((stats.items, stats.lessons, stats.episodes), (3, 2, 1));
    assert!(stats.bytes > 0);
}
