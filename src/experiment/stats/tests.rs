//! Tests of `experiment::stats`.

use super::*;
use pretty_assertions::assert_eq;

/// Asserts `actual` is within `relative` of `expected` (absolute when `expected` is 0).
#[track_caller]
fn close(actual: f64, expected: f64, relative: f64) {
    let tolerance = relative * expected.abs().max(f64::MIN_POSITIVE);
    assert!((actual - expected).abs() <= tolerance, "{actual} is not within {relative:e} of {expected}");
}

// Reference values below come from Python 3.11's standard library in a throwaway script:
// `statistics.NormalDist` (itself AS241), `math.erfc`, `math.comb` with `fractions`, and
// brute-force enumeration of sign assignments.

#[test]
fn normal_quantile_matches_known_values() {
    close(normal_quantile(0.975).unwrap(), 1.959_963_985, 1e-9);
    close(normal_quantile(0.995).unwrap(), 2.575_829_304, 1e-9);
    close(normal_quantile(0.975).unwrap(), 1.959_963_984_540_053_6, 1e-15);
    close(normal_quantile(0.025).unwrap(), -1.959_963_984_540_053_8, 1e-15);
    close(normal_quantile(0.9).unwrap(), 1.281_551_565_544_600_8, 1e-15);
    close(normal_quantile(0.3).unwrap(), -0.524_400_512_708_040_7, 1e-15);
    // The middle piece's boundary, and both tail pieces.
    close(normal_quantile(0.02425).unwrap(), -1.972_961_051_311_884_5, 1e-14);
    close(normal_quantile(1e-10).unwrap(), -6.361_340_902_404_056, 1e-14);
    close(normal_quantile(1.0 - 1e-12).unwrap(), 7.034_486_910_047_835_6, 1e-10);
    close(normal_quantile(1e-300).unwrap(), -37.047_096_299_361_2, 1e-14);
    assert_eq!(normal_quantile(0.5), Some(0.0));
    for bad in [0.0, 1.0, -0.1, 1.1, f64::NAN] {
        assert_eq!(normal_quantile(bad), None, "{bad}");
    }
}

#[test]
fn erfc_matches_python_on_both_sides_of_the_switch() {
    let cases = [
        (0.1, 0.887_537_083_981_715_2),
        (0.5, 0.479_500_122_186_953_5),
        (1.0, 0.157_299_207_050_285_13),
        (2.0, 0.004_677_734_981_047_265),
        (2.5, 0.000_406_952_017_444_958_9),
        (3.0, 2.209_049_699_858_543_8e-5),
        (4.0, 1.541_725_790_028_002e-8),
        (6.0, 2.151_973_671_249_891_6e-17),
        (10.0, 2.088_487_583_762_545e-45),
        (26.0, 5.663_192_408_856_143e-296),
    ];
    for (x, expected) in cases {
        close(erfc(x), expected, 1e-13);
        close(erfc(-x), 2.0 - expected, 1e-15);
    }
    assert_eq!(erfc(0.0), 1.0);
    assert_eq!(erfc(40.0), 0.0);
    assert!(erfc(f64::NAN).is_nan());
}

#[test]
fn wilson_interval_for_14_of_20() {
    let interval = wilson(14, 20, 0.95).unwrap();
    close(interval.low, 0.481_027_181_646_476_5, 1e-12);
    close(interval.high, 0.854_522_755_132_395_6, 1e-12);
    // The figures the report prints.
    assert_eq!(format!("{:.4}", interval.low), "0.4810");
    assert_eq!(format!("{:.4}", interval.high), "0.8545");
    let wide = wilson(50, 100, 0.99).unwrap();
    close(wide.low, 0.375_279_625_044_839_86, 1e-12);
    close(wide.high, 0.624_720_374_955_160_2, 1e-12);
}

#[test]
fn wilson_interval_at_the_edges() {
    let none = wilson(0, 10, 0.95).unwrap();
    assert_eq!(none.low, 0.0);
    close(none.high, 0.277_532_799_862_889_15, 1e-12);
    let all = wilson(10, 10, 0.95).unwrap();
    close(all.low, 0.722_467_200_137_110_9, 1e-12);
    assert_eq!(all.high, 1.0);
    let one = wilson(1, 1, 0.9).unwrap();
    close(one.low, 0.269_865_948_784_054_4, 1e-12);
    assert_eq!(one.high, 1.0);

    assert_eq!(wilson(0, 0, 0.95), None);
    assert_eq!(wilson(11, 10, 0.95), None);
    for bad in [0.0, 1.0, 1.5, f64::NAN] {
        assert_eq!(wilson(5, 10, bad), None, "{bad}");
    }
}

/// Pairs with the given numbers of each outcome, as `(variant, baseline)`.
fn pairs(both: usize, only_variant: usize, only_baseline: usize, neither: usize) -> Vec<(bool, bool)> {
    let mut pairs = Vec::new();
    pairs.extend(std::iter::repeat_n((true, true), both));
    pairs.extend(std::iter::repeat_n((true, false), only_variant));
    pairs.extend(std::iter::repeat_n((false, true), only_baseline));
    pairs.extend(std::iter::repeat_n((false, false), neither));
    pairs
}

#[test]
fn mcnemar_counts_discordant_pairs_and_gives_the_exact_p() {
    let m = mcnemar_exact(&pairs(3, 14, 2, 1));
    assert_eq!((m.only_variant, m.only_baseline), (14, 2));
    // 2 · (1 + 16 + 120) / 2^16
    close(m.p_value, 0.004_180_908_203_125, 1e-12);
    // Swapping the roles gives the same two-sided p.
    let swapped = mcnemar_exact(&pairs(3, 2, 14, 1));
    assert_eq!((swapped.only_variant, swapped.only_baseline), (2, 14));
    close(swapped.p_value, m.p_value, 1e-15);
}

#[test]
fn mcnemar_without_discordant_pairs_or_with_a_tie_is_one() {
    let m = mcnemar_exact(&pairs(7, 0, 0, 5));
    assert_eq!(m, McNemar { only_variant: 0, only_baseline: 0, p_value: 1.0 });
    assert_eq!(mcnemar_exact(&[]).p_value, 1.0);
    assert_eq!(mcnemar_exact(&pairs(0, 4, 4, 0)).p_value, 1.0);
    assert_eq!(mcnemar_exact(&pairs(0, 1, 0, 0)).p_value, 1.0);
}

#[test]
fn binomial_tails_are_exact_for_large_n() {
    let cases = [
        (2_000, 950, 0.013_412_073_120_140_347),
        (2_000, 900, 4.228_544_767_751_963e-6),
        (2_000, 999, 0.491_080_494_427_072_86),
        (2_000, 1_000, 0.508_919_505_572_927_2),
        (10_000, 4_900, 0.023_292_763_852_473_693),
        (10_000, 5_000, 0.503_989_323_069_691_1),
        (7, 3, 0.5),
        (1, 0, 0.5),
    ];
    for (n, k, expected) in cases {
        let actual = binomial_half_cdf(n, k);
        assert!((actual - expected).abs() <= 1e-10 * expected, "P(X ≤ {k}; n = {n}) = {actual}, expected {expected}");
    }
    // 2^-2000 is below the smallest f64: an honest 0, not NaN.
    assert_eq!(binomial_half_cdf(2_000, 0), 0.0);
    assert_eq!(binomial_half_cdf(5, 5), 1.0);
}

#[test]
fn splitmix64_matches_the_reference_stream() {
    let mut rng = SplitMix64::new(1_234_567);
    let first: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
    assert_eq!(
        first,
        [
            6_457_827_717_110_365_317,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
            4_593_380_528_125_082_431,
            16_408_922_859_458_223_821
        ]
    );
    let mut rng = SplitMix64::new(7);
    let mut seen = [0_u32; 3];
    for _ in 0..3_000 {
        let i = rng.below(3) as usize;
        seen[i] += 1;
    }
    assert!(seen.iter().all(|&s| (900..1_100).contains(&s)), "{seen:?}");
    assert_eq!(rng.below(0), 0);
}

fn sample() -> Vec<f64> {
    // 40 scores with some spread and a skew, like latencies or token counts.
    (0..40_u32).map(|i| f64::from((i * 37) % 23) + f64::from(i % 5) * 0.5).collect()
}

#[test]
fn bootstrap_is_deterministic_per_seed_and_stable_across_seeds() {
    let values = sample();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let first = bootstrap_mean(&values, 4_000, 0.95, 42).unwrap();
    let again = bootstrap_mean(&values, 4_000, 0.95, 42).unwrap();
    assert_eq!(first, again);
    assert!(first.low < mean && mean < first.high, "{first:?} around {mean}");

    let other = bootstrap_mean(&values, 4_000, 0.95, 43).unwrap();
    assert_ne!(first, other);
    let width = first.high - first.low;
    assert!((first.low - other.low).abs() < 0.1 * width, "{first:?} vs {other:?}");
    assert!((first.high - other.high).abs() < 0.1 * width, "{first:?} vs {other:?}");

    // About mean ± 1.96 · sd/√n, the normal approximation's interval.
    let n = values.len() as f64;
    let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let normal_width = 2.0 * 1.96 * sd / n.sqrt();
    close(width, normal_width, 0.15);
}

#[test]
fn bootstrap_edge_cases() {
    assert_eq!(bootstrap_mean(&[], 100, 0.95, 1), None);
    assert_eq!(bootstrap_mean(&[1.0], 0, 0.95, 1), None);
    assert_eq!(bootstrap_mean(&[1.0, 2.0], 100, 1.0, 1), None);
    assert_eq!(bootstrap_mean(&[1.0, f64::NAN], 100, 0.95, 1), None);
    assert_eq!(bootstrap_mean(&[3.5], 100, 0.95, 1), Some(Interval { low: 3.5, high: 3.5 }));
}

#[test]
fn quantiles_interpolate_between_order_statistics() {
    let sorted = [1.0, 2.0, 3.0, 4.0, 5.0];
    assert_eq!(quantile_sorted(&sorted, 0.0), Some(1.0));
    assert_eq!(quantile_sorted(&sorted, 1.0), Some(5.0));
    assert_eq!(quantile_sorted(&sorted, 0.5), Some(3.0));
    assert_eq!(quantile_sorted(&sorted, 0.1), Some(1.4));
    assert_eq!(quantile_sorted(&[], 0.5), None);
}

/// Brute force: every sign assignment, counted without any tolerance tricks beyond 1e-9.
fn enumerate_p(diffs: &[f64]) -> f64 {
    let observed: f64 = diffs.iter().sum::<f64>().abs();
    let total = 1_u64 << diffs.len();
    let extreme = (0..total)
        .filter(|mask| {
            let sum: f64 = diffs.iter().enumerate().map(|(i, d)| if mask & (1 << i) == 0 { *d } else { -*d }).sum();
            sum.abs() >= observed - 1e-9
        })
        .count();
    extreme as f64 / total as f64
}

#[test]
fn paired_permutation_is_exact_for_small_samples() {
    let diffs = [1.5, -0.5, 2.0, 3.0, 0.25, 1.0, -1.0, 2.5];
    let test = paired_permutation(&diffs, 0, 0);
    close(test.mean_difference, 1.093_75, 1e-15);
    // 22 of 256 assignments, from Python's enumeration.
    assert_eq!(test.p_value, 0.085_937_5);
    assert_eq!(test.p_value, enumerate_p(&diffs));

    // Differences whose mirrored sums only tie up to rounding.
    let decimals = [0.3, -0.2, 0.1, 0.4, -0.05];
    assert_eq!(paired_permutation(&decimals, 0, 0).p_value, 0.375);
    // Seeds and resamples do not matter when enumerating.
    assert_eq!(paired_permutation(&decimals, 999, 5).p_value, 0.375);
}

#[test]
fn paired_permutation_samples_large_inputs_reproducibly() {
    // 30 differences, leaning positive.
    let diffs: Vec<f64> = (0..30_u32).map(|i| f64::from((i * 7) % 11) - 4.0).collect();
    let first = paired_permutation(&diffs, 20_000, 9);
    assert_eq!(first, paired_permutation(&diffs, 20_000, 9));
    close(first.mean_difference, diffs.iter().sum::<f64>() / 30.0, 1e-15);
    // Against the normal approximation to the sign-flip distribution: z = Σd / √Σd².
    let z = diffs.iter().sum::<f64>() / diffs.iter().map(|d| d * d).sum::<f64>().sqrt();
    let approx = normal_two_sided(z);
    assert!((first.p_value - approx).abs() < 0.02, "{} vs {approx}", first.p_value);
    let other = paired_permutation(&diffs, 20_000, 10);
    assert!((first.p_value - other.p_value).abs() < 0.02);
    // The +1 correction: never 0, and 1/(R+1) when nothing is as extreme.
    let lopsided = vec![1.0; 40];
    assert_eq!(paired_permutation(&lopsided, 99, 1).p_value, 0.01);
}

#[test]
fn paired_permutation_degenerate_inputs() {
    assert_eq!(paired_permutation(&[], 100, 1), PairedTest { mean_difference: 0.0, p_value: 1.0 });
    assert_eq!(paired_permutation(&[0.0, 0.0], 100, 1).p_value, 1.0);
    assert!(paired_permutation(&[1.0, f64::INFINITY], 100, 1).p_value.is_nan());
}

#[test]
fn wilcoxon_exact_on_hollander_and_wolfe() {
    // Hollander & Wolfe's depression scores (R's `?wilcox.test` example): V = 40, and the
    // exact two-sided p is 2 · 10/512.
    let x = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30];
    // 3.14 is a score, not an approximation of π.
    #[allow(clippy::approx_constant)]
    let y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29];
    let diffs: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a - b).collect();
    let test = wilcoxon_signed_rank(&diffs).unwrap();
    assert_eq!(test.w, 40.0);
    assert_eq!(test.n, 9);
    assert!(test.exact);
    assert_eq!(test.p_value, 0.039_062_5);
    close(test.z, 2.013_986_184_380_913_7, 1e-12);
    close(test.rank_biserial, (40.0 - 5.0) / 45.0, 1e-15);
}

#[test]
fn wilcoxon_normal_approximation_with_ties_and_a_zero() {
    // Wikipedia's example: one zero difference (dropped) and a tie at |5|. W+ = 27,
    // W- = 18 (Wikipedia's W = 9 is their difference); R reports V = 27, p = 0.6353.
    let x = [125.0, 115.0, 130.0, 140.0, 140.0, 115.0, 140.0, 125.0, 140.0, 135.0];
    let y = [110.0, 122.0, 125.0, 120.0, 140.0, 124.0, 123.0, 137.0, 135.0, 145.0];
    let diffs: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a - b).collect();
    let test = wilcoxon_signed_rank(&diffs).unwrap();
    assert_eq!(test.w, 27.0);
    assert_eq!(test.n, 9);
    assert!(!test.exact);
    close(test.z, 0.474_295_333_383_001_8, 1e-12);
    close(test.p_value, 0.635_289_318_835_206_9, 1e-12);
    close(test.rank_biserial, 0.2, 1e-15);
}

#[test]
fn wilcoxon_edge_cases() {
    assert_eq!(wilcoxon_signed_rank(&[]), None);
    assert_eq!(wilcoxon_signed_rank(&[0.0, -0.0]), None);
    assert_eq!(wilcoxon_signed_rank(&[1.0, f64::NAN]), None);
    // One positive difference: W+ = 1 of 1, exact p = 2 · 1/2 = 1.
    let one = wilcoxon_signed_rank(&[0.0, 2.0]).unwrap();
    assert_eq!((one.w, one.n, one.exact, one.p_value), (1.0, 1, true, 1.0));
    // Ten positive distinct differences: exact p = 2/1024.
    let all: Vec<f64> = (1..=10_u32).map(f64::from).collect();
    assert_eq!(wilcoxon_signed_rank(&all).unwrap().p_value, 2.0 / 1024.0);
    // 26 distinct differences: beyond the exact limit.
    let many: Vec<f64> = (1..=26_u32).map(|i| f64::from(i) * if i % 3 == 0 { -1.0 } else { 1.0 }).collect();
    assert!(!wilcoxon_signed_rank(&many).unwrap().exact);
}

#[test]
fn signed_rank_counts_sum_to_all_subsets() {
    let counts = signed_rank_counts(9);
    assert_eq!(counts.iter().sum::<u64>(), 512);
    assert_eq!(&counts[..6], &[1, 1, 1, 2, 2, 3]);
    assert_eq!(signed_rank_counts(25).iter().sum::<u64>(), 1 << 25);
}

#[test]
fn p_values_print_plainly() {
    assert_eq!(format_p(0.004_180_9), "p = 0.004");
    assert_eq!(format_p(0.000_4), "p < 0.001");
    assert_eq!(format_p(0.05), "p = 0.050");
    assert_eq!(format_p(1.0), "p = 1");
    assert_eq!(format_p(f64::NAN), "p = n/a");
}

#[test]
fn describe_mcnemar_states_the_result_plainly() {
    let m = mcnemar_exact(&pairs(3, 14, 2, 1));
    assert_eq!(
        describe_mcnemar("experts", "inherit", &m, 20),
        "over 20 paired trials, `experts` passed 14 that `inherit` failed and `inherit` \
         passed 2 that `experts` failed: `experts` is 60 percentage points higher (exact \
         McNemar test, p = 0.004)"
    );
    let worse = mcnemar_exact(&pairs(10, 1, 3, 16));
    assert_eq!(
        describe_mcnemar("experts", "inherit", &worse, 30),
        "over 30 paired trials, `experts` passed 1 that `inherit` failed and `inherit` \
         passed 3 that `experts` failed: `experts` is 6.7 percentage points lower (exact \
         McNemar test, p = 0.625)"
    );
    let same = mcnemar_exact(&pairs(6, 0, 0, 4));
    assert_eq!(
        describe_mcnemar("experts", "inherit", &same, 10),
        "over 10 paired trials, `experts` and `inherit` passed and failed the same ones (no \
         discordant pairs; p = 1)"
    );
    let tied = mcnemar_exact(&pairs(0, 2, 2, 0));
    assert!(describe_mcnemar("a", "b", &tied, 4).contains("the two pass rates are equal"));
    assert_eq!(describe_mcnemar("a", "b", &mcnemar_exact(&[]), 0), "no paired trials of `a` and `b` to compare");
}
