//! How recalled items are ordered: similarity first, with past usefulness and recency breaking
//! near-ties, so a lesson that helped before wins over an equally similar one that did not. Pure:
//! both backends return their best candidates by similarity alone, and the service's
//! `Memory::recall_above` (what runs recall through) orders them with [`rerank`], so SQLite and
//! PostgreSQL rank alike. A person's search stays in plain similarity order, beside its scores.
//!
//! Hits are taken best first and grouped into bands: a band starts at the best hit not yet
//! placed and holds every hit scoring within [`TIE_BAND`] of it. Inside a band, the lesson that
//! fared better comes first, then the one used (or re-learned) more recently, then the more
//! similar, then the older id. Bands keep their similarity order.
//!
//! Invariant: reranking never puts a hit ahead of one more than [`TIE_BAND`] more similar, so a
//! clearly more relevant lesson always wins over a more useful one.

use std::cmp::Ordering;

use super::store::{Hit, Item};

/// Cosines this close count as a tie. MiniLM's scores for one query differ by less than this
/// between rewordings of the same advice, while a related lesson and an unrelated one are
/// usually 0.1 or more apart.
pub const TIE_BAND: f32 = 0.02;

/// How many candidates to ask a backend for so that reranking to `k` sees the ties at the
/// boundary: a band can only pull in hits that scored below the k-th, and a few more are
/// enough for the bands MiniLM produces.
pub fn candidates(k: usize) -> usize {
    k.saturating_add(k.max(4))
}

/// An item's usefulness as a fraction `(successes + 1) / (uses + 2)`: the share of the runs
/// that recalled it which succeeded, with one success and one failure assumed beforehand (a
/// Laplace prior), so an unused lesson is neutral (½), one success is not certainty, and a
/// lesson that keeps being recalled by failing runs sinks below a new one.
fn usefulness(item: &Item) -> (u128, u128) {
    let successes = u128::from(item.successes.min(item.uses));
    (successes + 1, u128::from(item.uses) + 2)
}

/// Compares two usefulness fractions exactly (by cross-multiplying): better first.
fn more_useful(a: &Item, b: &Item) -> Ordering {
    let ((an, ad), (bn, bd)) = (usefulness(a), usefulness(b));
    (bn * ad).cmp(&(an * bd))
}

/// When an item was last known to matter: its last use (or merge), else its creation.
fn recency(item: &Item) -> i64 {
    item.last_used_ms.map_or(item.created_ms, |used| used.max(item.created_ms))
}

/// Orders `hits` (any order) as recall presents them and keeps the first `k`.
pub fn rerank(mut hits: Vec<Hit>, k: usize) -> Vec<Hit> {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.id.cmp(&b.item.id)));
    let mut ranked = Vec::with_capacity(hits.len().min(k));
    let mut rest = hits.into_iter().peekable();
    while ranked.len() < k {
        let Some(top) = rest.next() else { break };
        let floor = top.score - TIE_BAND;
        let mut band = vec![top];
        while let Some(hit) = rest.next_if(|hit| hit.score >= floor) {
            band.push(hit);
        }
        band.sort_by(|a, b| {
            more_useful(&a.item, &b.item)
                .then(recency(&b.item).cmp(&recency(&a.item)))
                .then(b.score.total_cmp(&a.score))
                .then(a.item.id.cmp(&b.item.id))
        });
        ranked.extend(band);
    }
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::store::{Author, ItemKind, NewItem, Provenance, Scope};

    /// A hit on lesson `id` scoring `score`, recalled by `uses` runs of which `successes`
    /// succeeded, created at `created` and last used at `used`.
    fn hit(id: i64, score: f32, (uses, successes): (u64, u64), created: i64, used: Option<i64>) -> Hit {
        let new = NewItem {
            kind: ItemKind::Lesson,
            author: Author::Agent,
            scope: Scope::Global,
            provenance: Provenance::default(),
            text: format!("lesson {id}"),
            data: serde_json::Value::Null,
            created_ms: created,
            embedding: vec![1.0],
            embedder: "e".into(),
        };
        let item = Item { uses, successes, last_used_ms: used, ..Item::stored(id, new) };
        Hit { item, score }
    }

    fn ids(hits: &[Hit]) -> Vec<i64> {
        hits.iter().map(|h| h.item.id).collect()
    }

    #[test]
    fn near_ties_go_to_the_lesson_that_fared_better_then_the_newer() {
        // (case, hits, k, expected order)
        let cases: Vec<(&str, Vec<Hit>, usize, Vec<i64>)> = vec![
            (
                "equal similarity: the one recalled by successful runs first",
                vec![hit(1, 0.80, (4, 1), 0, None), hit(2, 0.80, (4, 4), 0, None)],
                2,
                vec![2, 1],
            ),
            (
                "within the band: usefulness beats a slightly better score",
                vec![hit(1, 0.815, (3, 0), 0, None), hit(2, 0.800, (3, 3), 0, None)],
                2,
                vec![2, 1],
            ),
            (
                "an unused lesson is neutral: above one that failed, below one that helped",
                vec![hit(1, 0.7, (2, 0), 0, None), hit(2, 0.7, (0, 0), 0, None), hit(3, 0.7, (2, 2), 0, None)],
                3,
                vec![3, 2, 1],
            ),
            (
                "equally useful: the one used more recently first",
                vec![hit(1, 0.6, (1, 1), 100, Some(200)), hit(2, 0.6, (1, 1), 100, Some(900))],
                2,
                vec![2, 1],
            ),
            (
                "never used: the newer one first",
                vec![hit(1, 0.6, (0, 0), 100, None), hit(2, 0.6, (0, 0), 500, None)],
                2,
                vec![2, 1],
            ),
            (
                "same fraction, same time: the more similar, then the older id",
                vec![hit(3, 0.60, (2, 1), 5, None), hit(2, 0.61, (0, 0), 5, None), hit(1, 0.60, (0, 0), 5, None)],
                3,
                vec![2, 1, 3],
            ),
            (
                "a clearly more similar lesson wins over a more useful one",
                vec![hit(1, 0.90, (5, 0), 0, None), hit(2, 0.70, (9, 9), 10, Some(10))],
                2,
                vec![1, 2],
            ),
            (
                "just outside the band is not a tie",
                vec![hit(1, 0.830, (5, 0), 0, None), hit(2, 0.805, (5, 5), 0, None)],
                2,
                vec![1, 2],
            ),
            (
                "a tie below the k-th candidate is seen and can take its place",
                vec![hit(1, 0.9, (0, 0), 0, None), hit(2, 0.8, (3, 0), 0, None), hit(3, 0.79, (3, 3), 0, None)],
                2,
                vec![1, 3],
            ),
            ("k = 0 keeps nothing", vec![hit(1, 0.9, (0, 0), 0, None)], 0, vec![]),
        ];
        for (case, hits, k, expected) in cases {
            assert_eq!(ids(&rerank(hits, k)), expected, "{case}");
        }
    }

    #[test]
    fn no_hit_passes_one_more_than_a_band_more_similar() {
        // A chain of hits 0.015 apart, each better used than the one above it.
        let hits: Vec<Hit> = (0..20).map(|i| hit(i, 0.9 - 0.015 * i as f32, (20, i as u64), 0, None)).collect();
        let ranked = rerank(hits, 20);
        assert_eq!(ranked.len(), 20);
        for (i, early) in ranked.iter().enumerate() {
            for late in &ranked[i + 1..] {
                assert!(late.score <= early.score + TIE_BAND, "{} ahead of {}", early.item.id, late.item.id);
            }
        }
        // Bands of two: each pair swapped, the pairs in similarity order.
        assert_eq!(ids(&ranked)[..4], [1, 0, 3, 2]);
    }

    #[test]
    fn enough_candidates_are_fetched_to_see_boundary_ties() {
        assert_eq!(candidates(0), 4);
        assert_eq!(candidates(3), 7);
        assert_eq!(candidates(10), 20);
        assert_eq!(candidates(usize::MAX), usize::MAX);
    }
}
