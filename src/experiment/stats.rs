//! The statistics an experiment's report uses: a pass rate with its Wilson score interval, a
//! mean with its percentile-bootstrap interval, and, for each variant against the baseline on
//! paired trials, the exact McNemar test (pass/fail), the sign-flip permutation test and the
//! Wilcoxon signed-rank test (continuous metrics), plus a plain sentence for McNemar's result.
//!
//! It owns the math only: no I/O, no clock, no global state, and no dependency (the normal
//! quantile, the complementary error function, binomial tails and the random generator are
//! written here, each with its source).
//!
//! Invariant: deterministic. The same inputs and seed give the same numbers, bit for bit, on
//! every run; the only randomness is `SplitMix64` seeded by the caller, and every sum runs in a
//! fixed order.

use std::f64::consts::{LN_2, PI, SQRT_2};

/// A two-sided interval `[low, high]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// The exact McNemar test of one variant against the baseline on paired pass/fail trials.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct McNemar {
    /// Pairs where the variant passed and the baseline failed.
    pub only_variant: u64,
    /// Pairs where the baseline passed and the variant failed.
    pub only_baseline: u64,
    /// Two-sided exact p-value; 1 when there is no discordant pair.
    pub p_value: f64,
}

/// A paired test on a continuous metric: the effect (mean of `variant - baseline`) and its
/// two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedTest {
    pub mean_difference: f64,
    pub p_value: f64,
}

/// The Wilcoxon signed-rank test on paired differences.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignedRank {
    /// W+, the sum of the ranks of the positive differences (R's `V`). Half-integers appear
    /// when tied magnitudes share an average rank.
    pub w: f64,
    /// How many differences were ranked: the non-zero ones (zeros are dropped, see
    /// [`wilcoxon_signed_rank`]).
    pub n: u64,
    /// The normal approximation's standardised statistic, with the tie and continuity
    /// corrections; positive when the differences lean positive. Reported even when the
    /// p-value is exact.
    pub z: f64,
    /// Two-sided p-value: exact when `exact`, else from `z`.
    pub p_value: f64,
    /// Whether `p_value` comes from the exact null distribution of W+.
    pub exact: bool,
    /// Effect size: the matched-pairs rank-biserial correlation `(W+ - W-) / (W+ + W-)`, in
    /// [-1, 1]; +1 when every non-zero difference is positive.
    pub rank_biserial: f64,
}

/// Up to this many differences, [`paired_permutation`] enumerates all `2^n` sign assignments:
/// 65,536 sums of 16 terms is quick, and an exact p-value needs no seed.
const PERMUTATION_EXACT_LIMIT: usize = 16;

/// Up to this many ranked differences without ties, [`wilcoxon_signed_rank`] uses the exact
/// null distribution. It costs nothing (W+ ≤ 325 at n = 25) and the normal approximation is
/// poorest exactly for small n; this is also where printed tables of critical values stop.
const WILCOXON_EXACT_LIMIT: u64 = 25;

/// SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators", 2014;
/// Vigna's public-domain reference `splitmix64.c`). One `u64` of state, any seed is a good seed
/// (no all-zero trap as in xorshift), and its output passes BigCrush: ample for resampling, and
/// small enough to keep here instead of depending on a crate whose stream could change between
/// versions and silently change reported intervals.
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `[0, bound)`, without modulo bias: Lemire's multiply-and-reject
    /// ("Fast random integer generation in an interval", 2019). Returns 0 for `bound == 0`
    /// rather than dividing by zero; callers never ask for it.
    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        let mut product = u128::from(self.next_u64()) * u128::from(bound);
        let mut low = product as u64;
        if low < bound {
            // 2^64 mod bound: the draws that would make some results one more likely than others.
            let threshold = bound.wrapping_neg() % bound;
            while low < threshold {
                product = u128::from(self.next_u64()) * u128::from(bound);
                low = product as u64;
            }
        }
        (product >> 64) as u64
    }
}

// Wichura's coefficients exactly as published (and as in Python's `statistics` module), so they
// can be checked digit by digit against the paper; f64 rounds the last few digits away.
#[allow(clippy::excessive_precision)]
mod as241 {
    /// Central region (|q| ≤ 0.425, q = p - 0.5): numerator a0..a7 in r = 0.180625 - q².
    pub const A: [f64; 8] = [
        3.38713_28727_96366_6080,
        1.33141_66789_17843_7745e2,
        1.97159_09503_06551_4427e3,
        1.37316_93765_50946_1125e4,
        4.59219_53931_54987_1457e4,
        6.72657_70927_00870_0853e4,
        3.34305_75583_58812_8105e4,
        2.50908_09287_30122_6727e3,
    ];

    /// Central region: denominator b1..b7 (b0 = 1).
    pub const B: [f64; 7] = [
        4.23133_30701_60091_1252e1,
        6.87187_00749_20579_0830e2,
        5.39419_60214_24751_1077e3,
        2.12137_94301_58659_5867e4,
        3.93078_95800_09271_0610e4,
        2.87290_85735_72194_2674e4,
        5.22649_52788_52854_5610e3,
    ];

    /// Near tail (r = √-ln(tail) ≤ 5): numerator c0..c7 in r - 1.6.
    pub const C: [f64; 8] = [
        1.42343_71107_49683_57734,
        4.63033_78461_56545_29590,
        5.76949_72214_60691_40550,
        3.64784_83247_63204_60504,
        1.27045_82524_52368_38258,
        2.41780_72517_74506_11770e-1,
        2.27238_44989_26918_45833e-2,
        7.74545_01427_83414_07640e-4,
    ];

    /// Near tail: denominator d1..d7 (d0 = 1).
    pub const D: [f64; 7] = [
        2.05319_16266_37758_82187,
        1.67638_48301_83803_84940,
        6.89767_33498_51000_04550e-1,
        1.48103_97642_74800_74590e-1,
        1.51986_66563_61645_71966e-2,
        5.47593_80849_95344_94600e-4,
        1.05075_00716_44416_84324e-9,
    ];

    /// Far tail (r > 5, a tail probability below about 1.4e-11): numerator e0..e7 in r - 5.
    pub const E: [f64; 8] = [
        6.65790_46435_01103_77720,
        5.46378_49111_64114_36990,
        1.78482_65399_17291_33580,
        2.96560_57182_85048_91230e-1,
        2.65321_89526_57612_30930e-2,
        1.24266_09473_88078_43860e-3,
        2.71155_55687_43487_57815e-5,
        2.01033_43992_92288_13265e-7,
    ];

    /// Far tail: denominator f1..f7 (f0 = 1).
    pub const F: [f64; 7] = [
        5.99832_20655_58879_37690e-1,
        1.36929_88092_27358_05310e-1,
        1.48753_61290_85061_48525e-2,
        7.86869_13114_56132_59100e-4,
        1.84631_83175_10054_68180e-5,
        1.42151_17583_16445_88870e-7,
        2.04426_31033_89939_78564e-15,
    ];
}

/// `c0 + c1·x + c2·x² + …` by Horner's rule.
fn polynomial(coefficients: &[f64], x: f64) -> f64 {
    coefficients.iter().rev().fold(0.0, |acc, &c| acc * x + c)
}

/// `1 + c1·x + c2·x² + …`: AS241's denominators, whose constant term is 1.
fn one_plus(coefficients: &[f64], x: f64) -> f64 {
    1.0 + x * polynomial(coefficients, x)
}

/// The standard normal quantile (inverse CDF) at `p`, or `None` unless `0 < p < 1`.
///
/// Wichura's algorithm AS241 (PPND16, Applied Statistics 37(3), 1988), accurate to about 1e-16
/// relative: the same rational approximations as Python's `statistics.NormalDist.inv_cdf`,
/// chosen over Acklam's (1e-9) so that intervals match other tools to the printed digit.
pub fn normal_quantile(p: f64) -> Option<f64> {
    // Written so that NaN also fails.
    if !(p > 0.0 && p < 1.0) {
        return None;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return Some(q * polynomial(&as241::A, r) / one_plus(&as241::B, r));
    }
    // The tails: a rational function of sqrt(-ln(tail probability)), in two pieces.
    let tail = if q < 0.0 { p } else { 1.0 - p };
    let r = (-tail.ln()).sqrt();
    let x = if r <= 5.0 {
        let r = r - 1.6;
        polynomial(&as241::C, r) / one_plus(&as241::D, r)
    } else {
        let r = r - 5.0;
        polynomial(&as241::E, r) / one_plus(&as241::F, r)
    };
    Some(if q < 0.0 { -x } else { x })
}

/// The complementary error function, within 1e-13 relative for `x ≥ 0` (tested against
/// Python's `math.erfc`). Rust's `f64::erfc` is not stable yet.
///
/// Below 2.5 it is `1 - erf(x)` with erf from the all-positive series
/// `erf(x) = 2/√π · e^(-x²) · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1))` (Abramowitz & Stegun 7.1.6),
/// which has no cancellation; `erf(2.5) ≈ 0.9996`, so the subtraction loses under four digits.
/// From 2.5 on, where that loss would grow, it is the continued fraction of A&S 7.1.14, which
/// converges quickly there and keeps full relative precision deep in the tail.
fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.5 {
        let two_x2 = 2.0 * x * x;
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= two_x2 / f64::from(2 * n + 1);
            sum += term;
            if term <= sum * f64::EPSILON * 0.25 {
                break;
            }
        }
        let erf = 2.0 / PI.sqrt() * (-x * x).exp() * sum;
        return 1.0 - erf;
    }
    // erfc(x) = e^(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))), evaluated by the
    // modified Lentz method (Numerical Recipes §5.2): f = b0 + a1/(b1 + a2/(b2 + …)).
    const TINY: f64 = 1e-300;
    let mut f = x;
    let mut c = f;
    let mut d = 0.0;
    for n in 1..500 {
        let a = f64::from(n) / 2.0;
        d = x + a * d;
        if d == 0.0 {
            d = TINY;
        }
        c = x + a / c;
        if c == 0.0 {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() <= f64::EPSILON {
            break;
        }
    }
    (-x * x).exp() / (PI.sqrt() * f)
}

/// The two-sided p-value of a standard normal statistic: `P(|Z| ≥ |z|)`.
fn normal_two_sided(z: f64) -> f64 {
    erfc(z.abs() / SQRT_2).min(1.0)
}

/// The Wilson score interval for `successes` of `trials` at `confidence` (e.g. 0.95).
///
/// Wilson rather than the textbook `p ± z·√(p(1-p)/n)` because the latter collapses to a
/// zero-width interval at 0/n and n/n and strays outside [0, 1], which is just where small
/// experiments land. `None` when `trials` is 0, `successes > trials`, or `confidence` is not
/// strictly between 0 and 1.
pub fn wilson(successes: u64, trials: u64, confidence: f64) -> Option<Interval> {
    if trials == 0 || successes > trials || !(confidence > 0.0 && confidence < 1.0) {
        return None;
    }
    let z = normal_quantile(1.0 - (1.0 - confidence) / 2.0)?;
    let n = trials as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let half = z / denominator * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    // At 0/n and n/n one end is exactly 0 or 1 in exact arithmetic; pin it so rounding does not
    // print "1e-17" or "0.9999999999999999".
    let low = if successes == 0 { 0.0 } else { (center - half).max(0.0) };
    let high = if successes == trials { 1.0 } else { (center + half).min(1.0) };
    Some(Interval { low, high })
}

/// `P(X ≤ k)` for `X ~ Binomial(n, 1/2)`, stable for large `n` (tested to n = 10,000).
///
/// The largest term of the lower tail is the last one, `P(X = k)` (for `k ≤ n/2`), so the sum
/// is `P(X = k) · Σ P(X = i)/P(X = k)`: the ratios are built backwards by
/// `P(X = i-1)/P(X = i) = i/(n-i+1)` and stay in [0, 1], and only `P(X = k)` goes through
/// logarithms (with compensated summation), so nothing overflows and a tail below 1e-308
/// becomes 0 rather than NaN.
fn binomial_half_cdf(n: u64, k: u64) -> f64 {
    if k >= n {
        return 1.0;
    }
    if 2 * k > n {
        // Symmetry, so the loop below always starts from the larger end of its terms.
        return 1.0 - binomial_half_cdf(n, n - k - 1);
    }
    // ln C(n, k) = Σ_{j=1..k} ln((n-k+j)/j), summed with Neumaier's compensation.
    let mut ln_choose = 0.0_f64;
    let mut compensation = 0.0_f64;
    for j in 1..=k {
        let term = ((n - k + j) as f64 / j as f64).ln();
        let sum = ln_choose + term;
        compensation += if ln_choose.abs() >= term.abs() { (ln_choose - sum) + term } else { (term - sum) + ln_choose };
        ln_choose = sum;
    }
    let ln_pmf_k = ln_choose + compensation - n as f64 * LN_2;

    let mut ratio_sum = 1.0_f64;
    let mut ratio = 1.0_f64;
    let mut i = k;
    while i > 0 {
        ratio *= i as f64 / (n - i + 1) as f64;
        ratio_sum += ratio;
        // The ratios shrink geometrically once below the mode: stop when they cannot change
        // the sum.
        if ratio < ratio_sum * f64::EPSILON * 0.25 {
            break;
        }
        i -= 1;
    }
    (ln_pmf_k.exp() * ratio_sum).min(1.0)
}

/// The exact McNemar test on paired pass/fail trials; each pair is
/// `(variant_passed, baseline_passed)` for the same task and repetition.
///
/// Only discordant pairs carry information. Under the null hypothesis (the two are equally
/// likely to win a discordant pair) the variant's wins `b` out of `b + c` follow
/// Binomial(b + c, 1/2), so `p = min(1, 2 · P(X ≤ min(b, c)))`: the exact two-sided binomial
/// test, valid however few pairs there are (the chi-squared version is not below ~25).
pub fn mcnemar_exact(pairs: &[(bool, bool)]) -> McNemar {
    let only_variant = pairs.iter().filter(|&&(v, b)| v && !b).count() as u64;
    let only_baseline = pairs.iter().filter(|&&(v, b)| !v && b).count() as u64;
    let discordant = only_variant + only_baseline;
    let p_value = if discordant == 0 {
        1.0
    } else {
        (2.0 * binomial_half_cdf(discordant, only_variant.min(only_baseline))).min(1.0)
    };
    McNemar { only_variant, only_baseline, p_value }
}

/// The `q`-quantile of sorted, non-empty `sorted` by linear interpolation between order
/// statistics (Hyndman & Fan type 7, the default of R and NumPy).
fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let h = last as f64 * q.clamp(0.0, 1.0);
    let below = h.floor() as usize;
    let low = *sorted.get(below)?;
    let high = *sorted.get(below + 1).unwrap_or(&low);
    Some(low + (h - below as f64) * (high - low))
}

/// A percentile-bootstrap interval for the mean of `values`: `resamples` resamples with
/// replacement drawn from `SplitMix64` seeded by `seed`, and the `(1 ± confidence)/2`
/// quantiles of their means.
///
/// `None` when `values` is empty, `resamples` is 0, `confidence` is not strictly between 0 and
/// 1, or a value is not finite (its mean would be meaningless). The percentile bootstrap is
/// known to run a little narrow for very small samples; the report shows `n` beside it.
pub fn bootstrap_mean(values: &[f64], resamples: usize, confidence: f64, seed: u64) -> Option<Interval> {
    if values.is_empty()
        || resamples == 0
        || !(confidence > 0.0 && confidence < 1.0)
        || values.iter().any(|v| !v.is_finite())
    {
        return None;
    }
    let mut rng = SplitMix64::new(seed);
    let len = values.len() as u64;
    let n = values.len() as f64;
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let sum: f64 = (0..len).map(|_| values.get(rng.below(len) as usize).copied().unwrap_or(0.0)).sum();
            sum / n
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let alpha = 1.0 - confidence;
    Some(Interval { low: quantile_sorted(&means, alpha / 2.0)?, high: quantile_sorted(&means, 1.0 - alpha / 2.0)? })
}

/// The sign-flip permutation test on the mean of paired differences (`variant - baseline`),
/// two-sided.
///
/// Under the null hypothesis each difference is as likely to have either sign, so the p-value
/// is the share of sign assignments whose |sum| is at least the observed one. With at most 16
/// differences all `2^n` assignments are enumerated (exact; `resamples` and `seed` unused);
/// beyond that `resamples` random assignments from `SplitMix64` give
/// `p = (1 + extreme) / (1 + resamples)`, counting the observed assignment so that p is never 0
/// (Phipson & Smyth, 2010). No differences give a mean of 0 and p = 1; a non-finite difference
/// gives NaN.
pub fn paired_permutation(diffs: &[f64], resamples: usize, seed: u64) -> PairedTest {
    if diffs.is_empty() {
        return PairedTest { mean_difference: 0.0, p_value: 1.0 };
    }
    let observed: f64 = diffs.iter().sum();
    let mean_difference = observed / diffs.len() as f64;
    if !observed.is_finite() {
        return PairedTest { mean_difference, p_value: f64::NAN };
    }
    // Sums that are equal in exact arithmetic can differ in the last bits when their terms
    // carry other signs (e.g. [1, 2, 3] against [-1, -2, 3]'s mirror), and such ties must
    // count as "at least as extreme"; this tolerance is far above rounding and far below any
    // real difference.
    let scale: f64 = diffs.iter().map(|d| d.abs()).sum();
    let threshold = observed.abs() - scale * 1e-12;
    if scale == 0.0 {
        // Every assignment sums to 0, as extreme as the observed 0: what the loops below would
        // find, without their cost (metrics that do not vary are common: depth, tool errors).
        return PairedTest { mean_difference, p_value: 1.0 };
    }

    let p_value = if diffs.len() <= PERMUTATION_EXACT_LIMIT {
        let assignments = 1_u32 << diffs.len();
        let extreme = (0..assignments)
            .filter(|mask| {
                let sum: f64 = diffs.iter().enumerate().map(|(i, &d)| if mask >> i & 1 == 1 { -d } else { d }).sum();
                sum.abs() >= threshold
            })
            .count();
        extreme as f64 / f64::from(assignments)
    } else {
        let mut rng = SplitMix64::new(seed);
        let mut extreme = 0_usize;
        for _ in 0..resamples {
            let mut sum = 0.0;
            // One 64-bit draw gives the signs of 64 differences.
            for chunk in diffs.chunks(64) {
                let bits = rng.next_u64();
                for (i, &d) in chunk.iter().enumerate() {
                    sum += if bits >> i & 1 == 1 { -d } else { d };
                }
            }
            if sum.abs() >= threshold {
                extreme += 1;
            }
        }
        (1 + extreme) as f64 / (1 + resamples) as f64
    };
    PairedTest { mean_difference, p_value }
}

/// The Wilcoxon signed-rank test on paired differences (`variant - baseline`), two-sided.
///
/// Choices, all as in R's `wilcox.test(paired = TRUE)`:
/// - zeros are dropped before ranking (Wilcoxon's handling, not Pratt's), so `n` counts the
///   non-zero differences;
/// - tied magnitudes share their average rank, and the variance is reduced by
///   `Σ(t³ - t)/48` over tie groups;
/// - the p-value is exact (the null distribution of W+ by counting subsets of 1..n) when at
///   most 25 differences remain and no magnitudes tie, since average ranks break the exact
///   distribution; otherwise it is the normal approximation with a continuity correction of
///   1/2 (clamped so that it never crosses the mean).
///
/// Ties are exact equality of `|d|`: round the differences first if they come from arithmetic
/// that should tie but may not. `None` when no difference is non-zero or one is not finite.
pub fn wilcoxon_signed_rank(diffs: &[f64]) -> Option<SignedRank> {
    if diffs.iter().any(|d| !d.is_finite()) {
        return None;
    }
    let mut nonzero: Vec<f64> = diffs.iter().copied().filter(|&d| d != 0.0).collect();
    if nonzero.is_empty() {
        return None;
    }
    nonzero.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    let count = nonzero.len();
    let n = count as f64;

    let mut w_plus = 0.0;
    let mut tie_term = 0.0;
    let mut start = 0;
    while start < count {
        let magnitude = nonzero.get(start).map_or(0.0, |d| d.abs());
        let group = nonzero.get(start..).map_or(1, |rest| rest.iter().take_while(|d| d.abs() == magnitude).count());
        // Ranks start+1 ..= start+group share their average.
        let rank = start as f64 + (group as f64 + 1.0) / 2.0;
        let positives = nonzero.get(start..start + group).map_or(0, |g| g.iter().filter(|&&d| d > 0.0).count());
        w_plus += rank * positives as f64;
        let t = group as f64;
        tie_term += t * t * t - t;
        start += group.max(1);
    }
    let total = n * (n + 1.0) / 2.0;
    let w_minus = total - w_plus;

    let mean = total / 2.0;
    let variance = n * (n + 1.0) * (2.0 * n + 1.0) / 24.0 - tie_term / 48.0;
    let deviation = w_plus - mean;
    let corrected = (deviation.abs() - 0.5).max(0.0);
    let z = if variance > 0.0 { corrected / variance.sqrt() * deviation.signum() } else { 0.0 };

    let exact = tie_term == 0.0 && count as u64 <= WILCOXON_EXACT_LIMIT;
    let p_value = if exact {
        // Without ties W+ is an integer; the two tails are mirror images around n(n+1)/4.
        let smaller = w_plus.min(w_minus).round() as usize;
        let counts = signed_rank_counts(count);
        let at_most: u64 = counts.iter().take(smaller + 1).sum();
        (2.0 * at_most as f64 / (count as f64).exp2()).min(1.0)
    } else {
        normal_two_sided(z)
    };

    Some(SignedRank { w: w_plus, n: count as u64, z, p_value, exact, rank_biserial: (w_plus - w_minus) / total })
}

/// For each s, how many subsets of {1, …, n} sum to s: the null distribution of W+ times 2ⁿ.
/// Exact in `u64` for the n ≤ 25 it is used with (at most 2²⁵ subsets).
fn signed_rank_counts(n: usize) -> Vec<u64> {
    let max = n * (n + 1) / 2;
    let mut counts = vec![0_u64; max + 1];
    if let Some(first) = counts.first_mut() {
        *first = 1;
    }
    for k in 1..=n {
        // Downwards so each k is used at most once (0/1 knapsack).
        for s in (k..=max).rev() {
            let without_k = counts.get(s - k).copied().unwrap_or(0);
            if let Some(slot) = counts.get_mut(s) {
                *slot += without_k;
            }
        }
    }
    counts
}

/// A p-value as a report prints it: `p < 0.001`, `p = 1`, or `p = ` three decimals.
pub fn format_p(p: f64) -> String {
    if p.is_nan() {
        "p = n/a".to_string()
    } else if p < 0.001 {
        "p < 0.001".to_string()
    } else if p >= 0.9995 {
        "p = 1".to_string()
    } else {
        format!("p = {p:.3}")
    }
}

/// McNemar's result in one plain sentence, e.g. "over 20 paired trials, `experts` passed 14
/// that `inherit` failed and `inherit` passed 2 that `experts` failed: `experts` is 60
/// percentage points higher (exact McNemar test, p = 0.004)".
///
/// `paired` is the number of pairs the test saw (`pairs.len()`); a smaller number is raised to
/// the discordant count so the sentence never claims more discordant pairs than trials.
pub fn describe_mcnemar(variant: &str, baseline: &str, m: &McNemar, paired: u64) -> String {
    let b = m.only_variant;
    let c = m.only_baseline;
    let paired = paired.max(b + c);
    let p = format_p(m.p_value);
    if paired == 0 {
        return format!("no paired trials of `{variant}` and `{baseline}` to compare");
    }
    if b + c == 0 {
        return format!(
            "over {paired} paired trials, `{variant}` and `{baseline}` passed and failed the \
             same ones (no discordant pairs; {p})"
        );
    }
    let verdict = if b == c {
        "the two pass rates are equal".to_string()
    } else {
        let points = (b.abs_diff(c)) as f64 / paired as f64 * 100.0;
        // Whole points unless that would hide a difference smaller than one point.
        let points =
            if (points - points.round()).abs() < 0.05 { format!("{points:.0}") } else { format!("{points:.1}") };
        let direction = if b > c { "higher" } else { "lower" };
        format!("`{variant}` is {points} percentage points {direction}")
    };
    format!(
        "over {paired} paired trials, `{variant}` passed {b} that `{baseline}` failed and \
         `{baseline}` passed {c} that `{variant}` failed: {verdict} (exact McNemar test, {p})"
    )
}

#[cfg(test)]
mod tests;
