//! The in-memory copy of a store's vectors from one embedder, with the fields search filters
//! on (kind, author, scope) beside them, so a search touches no database row until it knows
//! its hits. A backend loads it, keeps it in step with its own writes (insert, replace, remove
//! by id) and reloads it when someone else changed the store.

use std::collections::HashMap;

use super::search::{Matrix, WrongDims};
use super::store::{Author, Filter, ItemId, ItemKind, Scope};

/// What a filter looks at for one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowInfo {
    pub kind: ItemKind,
    pub author: Author,
    pub scope: Scope,
}

/// Vectors of one embedder, one row per item.
#[derive(Debug)]
pub struct VectorTable {
    embedder: String,
    ids: Vec<ItemId>,
    infos: Vec<RowInfo>,
    rows: HashMap<ItemId, usize>,
    matrix: Matrix,
}

impl VectorTable {
    pub fn new(embedder: &str, dims: usize) -> Self {
        VectorTable {
            embedder: embedder.to_string(),
            ids: Vec::new(),
            infos: Vec::new(),
            rows: HashMap::new(),
            matrix: Matrix::new(dims),
        }
    }

    pub fn embedder(&self) -> &str {
        &self.embedder
    }

    pub fn dims(&self) -> usize {
        self.matrix.dims()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn reserve(&mut self, rows: usize) {
        self.ids.reserve(rows);
        self.infos.reserve(rows);
        self.rows.reserve(rows);
        self.matrix.reserve(rows);
    }

    /// Adds item `id`, or replaces its row if it is already here.
    pub fn upsert(&mut self, id: ItemId, info: RowInfo, vector: &[f32]) -> Result<(), WrongDims> {
        if let Some(&row) = self.rows.get(&id) {
            self.matrix.set(row, vector)?;
            self.infos[row] = info;
        } else {
            let row = self.matrix.push(vector)?;
            self.ids.push(id);
            self.infos.push(info);
            self.rows.insert(id, row);
        }
        Ok(())
    }

    /// Drops item `id`'s row; `false` if it had none.
    pub fn remove(&mut self, id: ItemId) -> bool {
        let Some(row) = self.rows.remove(&id) else { return false };
        self.matrix.swap_remove(row);
        self.ids.swap_remove(row);
        self.infos.swap_remove(row);
        // The last row moved into the hole.
        if let Some(&moved) = self.ids.get(row) {
            self.rows.insert(moved, row);
        }
        true
    }

    /// The `k` items most similar to `query` among those `filter` accepts, scoring at least
    /// `min_score`, best first (equal scores: lower id first).
    pub fn search(&self, query: &[f32], k: usize, filter: &Filter, min_score: f32) -> Vec<(ItemId, f32)> {
        let unfiltered = *filter == Filter::default();
        let allow =
            |row: usize| unfiltered || self.infos.get(row).is_some_and(|i| filter.matches(i.kind, i.author, &i.scope));
        let mut hits: Vec<(ItemId, f32)> =
            self.matrix.top_k(query, k, min_score, allow).into_iter().map(|s| (self.ids[s.row], s.score)).collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::store::ScopeFilter;

    fn info(kind: ItemKind, scope: Scope) -> RowInfo {
        RowInfo { kind, author: Author::Agent, scope }
    }

    fn unit(angle: f32) -> Vec<f32> {
        vec![angle.cos(), angle.sin()]
    }

    #[test]
    fn rows_follow_their_ids_through_replace_and_remove() {
        let mut table = VectorTable::new("e", 2);
        for id in 1..=5 {
            table.upsert(id, info(ItemKind::Lesson, Scope::Global), &unit(id as f32 * 0.3)).unwrap();
        }
        table.upsert(5, info(ItemKind::Lesson, Scope::Global), &unit(0.0)).unwrap();
        assert!(table.remove(2));
        assert!(!table.remove(2));
        assert!(table.remove(1));
        assert_eq!(table.len(), 3);
        let ids: Vec<ItemId> = table.search(&unit(0.0), 10, &Filter::default(), -1.0).iter().map(|h| h.0).collect();
        assert_eq!(ids, vec![5, 3, 4], "5 now points along the query, then 3 (0.9 rad), then 4 (1.2 rad)");
        assert!(table.upsert(9, info(ItemKind::Lesson, Scope::Global), &[1.0, 0.0, 0.0]).is_err());
    }

    #[test]
    fn search_applies_the_filter_and_breaks_ties_by_id() {
        let mut table = VectorTable::new("e", 2);
        table.upsert(3, info(ItemKind::Lesson, Scope::Global), &unit(0.0)).unwrap();
        table.upsert(1, info(ItemKind::Lesson, Scope::Expert("a".into())), &unit(0.0)).unwrap();
        table.upsert(2, info(ItemKind::Episode, Scope::Expert("b".into())), &unit(0.1)).unwrap();
        let all = table.search(&unit(0.0), 10, &Filter::default(), -1.0);
        assert_eq!(all.iter().map(|h| h.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        let for_b = Filter { kind: None, author: None, scope: ScopeFilter::VisibleTo("b".into()) };
        assert_eq!(table.search(&unit(0.0), 10, &for_b, -1.0).iter().map(|h| h.0).collect::<Vec<_>>(), vec![3, 2]);
        let episodes = Filter { kind: Some(ItemKind::Episode), ..Filter::default() };
        assert_eq!(table.search(&unit(0.0), 10, &episodes, -1.0).len(), 1);
        let by_user = Filter { author: Some(Author::User), ..Filter::default() };
        assert!(table.search(&unit(0.0), 10, &by_user, -1.0).is_empty());
    }
}
