//! Tests of `experiment::summary`.

use super::fixtures::{info, record};
use super::*;

/// 10 paired trials: the variant passes 5 that the baseline fails, the baseline passes 1
/// that the variant fails, both pass 3, both fail 1. Plus a variant-only trial (rep 99) and
/// a baseline-only one (task "lonely") that must not pair.
fn known_pairing() -> (MatrixInfo, Vec<TrialRecord>) {
    let info = info(&["base", "new"], &["t"], 10);
    let outcomes = [
        (true, false),
        (true, false),
        (true, false),
        (true, false),
        (true, false),
        (false, true),
        (true, true),
        (true, true),
        (true, true),
        (false, false),
    ];
    let mut records = Vec::new();
    let mut index = 0;
    for (rep, (new, base)) in outcomes.iter().enumerate() {
        let rep = rep as u32 + 1;
        records.push(record(index, "base", "t", rep, *base, 1_000));
        records.push(record(index + 1, "new", "t", rep, *new, 1_000 + 100 * u64::from(rep)));
        index += 2;
    }
    records.push(record(index, "new", "t", 99, false, 50_000));
    records.push(record(index + 1, "base", "lonely", 1, true, 10));
    (info, records)
}

#[test]
fn counts_passes_and_matches_wilson() {
    let (info, records) = known_pairing();
    let summary = summarize(&info, &records);
    assert_eq!(summary.trials_recorded, 22);
    assert_eq!(summary.trials_planned, 20);
    let base = &summary.variants[0];
    let new = &summary.variants[1];
    assert_eq!((base.variant.as_str(), base.trials, base.passed), ("base", 11, 5));
    assert_eq!((new.variant.as_str(), new.trials, new.passed), ("new", 11, 8));
    assert!((new.pass_rate.unwrap() - 8.0 / 11.0).abs() < 1e-12);
    // The same bounds as `stats::wilson`, to the 12 significant digits the summary keeps.
    for (variant, passed) in [(new, 8), (base, 5)] {
        let expected = stats::wilson(passed, 11, 0.95).unwrap();
        let actual = variant.pass_interval.unwrap();
        assert!((actual.low - expected.low).abs() < 1e-12, "{actual:?} vs {expected:?}");
        assert!((actual.high - expected.high).abs() < 1e-12, "{actual:?} vs {expected:?}");
    }
    let exact = new.checks.iter().find(|c| c.name == "exact").unwrap();
    assert_eq!((exact.passed, exact.of), (8, 11));
    assert_eq!(new.checks[0], CheckCount { name: "has-answer".into(), passed: 11, of: 11 });
}

#[test]
fn metrics_have_means_intervals_and_ranges() {
    let (info, records) = known_pairing();
    let summary = summarize(&info, &records);
    let base = &summary.variants[0];
    let tokens = base.metric(Metric::Tokens).unwrap();
    assert_eq!(tokens.n, 11);
    assert_eq!((tokens.min, tokens.max), (10.0, 1_000.0));
    assert!((tokens.mean - 10_010.0 / 11.0).abs() < 1e-9);
    let interval = tokens.interval.unwrap();
    assert!(interval.low <= tokens.mean && tokens.mean <= interval.high);
    // No prices: no cost row.
    assert!(base.metric(Metric::Cost).is_none());
    assert_eq!(base.metrics.len(), METRICS.len() - 1);
}

#[test]
fn mcnemar_counts_a_known_pairing_and_ignores_unpaired_trials() {
    let (info, records) = known_pairing();
    let summary = summarize(&info, &records);
    assert_eq!(summary.comparisons.len(), 1);
    let comparison = &summary.comparisons[0];
    assert_eq!(comparison.variant, "new");
    assert_eq!(comparison.paired, 10);
    assert_eq!((comparison.pass.only_variant, comparison.pass.only_baseline), (5, 1));
    let expected = stats::mcnemar_exact(&[
        (true, false),
        (true, false),
        (true, false),
        (true, false),
        (true, false),
        (false, true),
    ]);
    assert!((comparison.pass.p_value - expected.p_value).abs() < 1e-12);
    assert!(
        comparison.pass.sentence.starts_with("over 10 paired trials, `new` passed 5"),
        "{}",
        comparison.pass.sentence
    );

    // Tokens: the variant used 100·rep more on each of the 10 pairs; rep 99 is not paired.
    let tokens = comparison.metric(Metric::Tokens).unwrap();
    assert_eq!(tokens.pairs, 10);
    assert_eq!(tokens.differing, 10);
    assert!((tokens.mean_difference - 550.0).abs() < 1e-9);
    let wilcoxon = tokens.wilcoxon.as_ref().unwrap();
    assert_eq!((wilcoxon.n, wilcoxon.rank_biserial), (10, 1.0));
    assert_eq!(wilcoxon.p_value, 2.0 / 1024.0);
    assert_eq!(
        tokens.sentence,
        "`new` used 550 more tokens per trial than `base` (mean of 10 paired differences; \
         permutation test, p = 0.002)"
    );
    // Turns never differ: present, but with nothing differing and a "same" sentence.
    let turns = comparison.metric(Metric::Turns).unwrap();
    assert_eq!((turns.differing, turns.wilcoxon.is_none()), (0, true));
    assert!(turns.sentence.contains("had the same model calls"), "{}", turns.sentence);
}

#[test]
fn order_does_not_matter() {
    let (info, records) = known_pairing();
    let first = summarize(&info, &records);
    let mut reversed = records.clone();
    reversed.reverse();
    assert_eq!(summarize(&info, &reversed), first);
    // A fixed shuffle: every 7th position, wrapping (7 is prime to 22).
    let shuffled: Vec<TrialRecord> = (0..records.len()).map(|i| records[(i * 7) % records.len()].clone()).collect();
    assert_eq!(summarize(&info, &shuffled), first);
}

#[test]
fn duplicated_keys_count_once() {
    let (info, records) = known_pairing();
    let mut doubled = records.clone();
    doubled.extend(records.iter().cloned());
    assert_eq!(summarize(&info, &doubled), summarize(&info, &records));
}

#[test]
fn variants_without_records_still_appear() {
    let info = info(&["base", "a", "b"], &["t"], 1);
    let records = vec![record(0, "base", "t", 1, true, 10)];
    let summary = summarize(&info, &records);
    assert_eq!(summary.variants.len(), 3);
    let b = &summary.variants[2];
    assert_eq!((b.trials, b.passed, b.pass_rate, b.pass_interval), (0, 0, None, None));
    assert!(b.metrics.is_empty());
    assert_eq!(summary.comparisons[1].paired, 0);
    assert!(summary.comparisons[1].metrics.is_empty());
    assert_eq!(summary.per_task[0].cells[2], TaskCell { variant: "b".into(), passed: 0, trials: 0 });
    // Nothing NaN, so it serializes.
    let json = serde_json::to_string(&summary).unwrap();
    assert!(!json.contains("NaN"));
}

#[test]
fn per_task_matrix_counts_each_cell() {
    let (info, records) = known_pairing();
    let summary = summarize(&info, &records);
    assert_eq!(summary.per_task.len(), 2);
    assert_eq!(summary.per_task[0].task_id, "t");
    assert_eq!(summary.per_task[0].cells[0], TaskCell { variant: "base".into(), passed: 4, trials: 10 });
    assert_eq!(summary.per_task[0].cells[1], TaskCell { variant: "new".into(), passed: 8, trials: 11 });
    // A task the matrix does not list still shows, after the listed ones.
    assert_eq!(summary.per_task[1].task_id, "lonely");
    assert_eq!(summary.per_task[1].cells[0].passed, 1);
}

#[test]
fn serde_round_trip_is_identical() {
    let (info, mut records) = known_pairing();
    records[0].cost = Some(0.0123);
    records[1].cost = Some(0.0456);
    let summary = summarize(&info, &records);
    assert!(summary.comparisons[0].metric(Metric::Cost).is_some());
    let json = serde_json::to_string_pretty(&summary).unwrap();
    let back: Summary = serde_json::from_str(&json).unwrap();
    assert_eq!(back, summary);
    assert_eq!(serde_json::to_string_pretty(&back).unwrap(), json);
}

#[test]
fn tidy_keeps_twelve_digits_and_round_trips_json() {
    assert_eq!(tidy(5.0 / 11.0), 0.454_545_454_545);
    assert_eq!(tidy(0.219_000_000_000_000_08), 0.219);
    assert_eq!(tidy(1_234_567_890_123_456.0), 1_234_567_890_120_000.0);
    assert_eq!(tidy(0.0), 0.0);
    assert_eq!(tidy(1e-30), 0.0);
    // Many awkward values survive serde_json exactly once tidied.
    for i in 1..2_000_u32 {
        for x in [f64::from(i) / 7.0, 1.0 / f64::from(i * i), f64::from(i).powf(4.3), 1e-15 * f64::from(i) / 3.0] {
            let t = tidy(x);
            let back: f64 = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
            assert_eq!(back, t, "{x}");
        }
    }
}

#[test]
fn seeds_are_stable_and_distinct() {
    // FNV-1a of the empty string is the offset basis; of "a" then 0, a fixed value.
    assert_eq!(seed(&[]), 0xcbf2_9ce4_8422_2325);
    assert_ne!(seed(&["ab", "c"]), seed(&["a", "bc"]));
    assert_eq!(seed(&["demo", "x", "tokens"]), seed(&["demo", "x", "tokens"]));
}

#[test]
fn numbers_print_for_people() {
    assert_eq!(format_number(1_240.0), "1,240");
    assert_eq!(format_number(-1_234_567.4), "-1,234,567");
    assert_eq!(format_number(999.6), "1,000");
    assert_eq!(format_number(12.34), "12.3");
    assert_eq!(format_number(1.5), "1.5");
    assert_eq!(format_number(2.0), "2");
    assert_eq!(format_number(0.12345), "0.123");
    assert_eq!(format_number(0.001234), "0.00123");
    assert_eq!(format_number(-0.0001), "-0.0001");
    assert_eq!(format_number(0.0), "0");
    assert_eq!(format_number(f64::NAN), "n/a");
    assert_eq!(format_metric(Metric::Cost, 0.0123), "$0.0123");
    assert_eq!(format_metric(Metric::WallSeconds, 3.25), "3.25 s");
    assert_eq!(format_percent(0.7), "70 %");
    assert_eq!(format_percent(0.999), "99.9 %");
    assert_eq!(format_percent(1.0), "100 %");
}

#[test]
fn difference_sentences_read_plainly() {
    assert_eq!(
        describe_difference("experts", "inherit", Metric::Tokens, 1_240.0, 20, 0.003),
        "`experts` used 1,240 more tokens per trial than `inherit` (mean of 20 paired differences; \
         permutation test, p = 0.003)"
    );
    assert_eq!(
        describe_difference("a", "b", Metric::WallSeconds, -2.5, 1, 1.0),
        "`a` took 2.5 s less per trial than `b` (mean of 1 paired difference; permutation test, p = 1)"
    );
    assert_eq!(
        describe_difference("a", "b", Metric::Score, -0.25, 4, 0.5),
        "`a` scored 0.25 lower per trial than `b` (mean of 4 paired differences; permutation test, p = 0.500)"
    );
    assert!(describe_difference("a", "b", Metric::Cost, 0.004, 4, 0.5).contains("cost $0.004 more per trial"));
    assert!(describe_difference("a", "b", Metric::Depth, 1.0, 4, 0.5).contains("nested subtasks 1 level deeper"));
    assert!(describe_difference("a", "b", Metric::Depth, -1.5, 4, 0.5).contains("1.5 levels shallower"));
    assert!(
        describe_difference("a", "b", Metric::Tokens, 1e-9, 4, 1.0)
            .starts_with("`a` and `b` had the same tokens per trial on average")
    );
}
