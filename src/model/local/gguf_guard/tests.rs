//! Tests of `model::local::gguf_guard`.

use std::io::Cursor;

use super::*;
use candle_core::quantized::gguf_file::Content;

/// A GGUF file written field by field, as the spec lays it out.
#[derive(Clone, Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn string(self, s: &str) -> Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    fn header(version: u32, tensors: u64, entries: u64) -> Self {
        Writer::default().bytes(b"GGUF").u32(version).u64(tensors).u64(entries)
    }
    fn pad_to(mut self, alignment: usize) -> Self {
        while self.0.len() % alignment != 0 {
            self.0.push(0);
        }
        self
    }
}

/// Three entries (a string, the alignment, an array of strings) and one F32 tensor of 4.
fn valid(version: u32) -> Vec<u8> {
    Writer::header(version, 1, 3)
        .string("general.architecture")
        .u32(8)
        .string("llama")
        .string("general.alignment")
        .u32(4)
        .u32(32)
        .string("tokenizer.ggml.tokens")
        .u32(9)
        .u32(8)
        .u64(2)
        .string("a")
        .string("b")
        .string("weight")
        .u32(1)
        .u64(4)
        .u32(0)
        .u64(0)
        .pad_to(32)
        .bytes(&[0u8; 16])
        .0
}

/// A header with one metadata entry whose value is `value` (type and bytes).
fn one_entry(kind: u32, value: Writer) -> Vec<u8> {
    Writer::header(3, 0, 1).string("key").u32(kind).bytes(&value.0).0
}

fn check_bytes(bytes: &[u8]) -> Result<GgufLayout, GgufError> {
    check(&mut Cursor::new(bytes))
}

#[test]
fn a_valid_file_passes_and_candle_reads_it_too() {
    for version in [2, 3] {
        let bytes = valid(version);
        let layout = check_bytes(&bytes).unwrap();
        assert_eq!(
            layout,
            GgufLayout { version, tensor_count: 1, metadata_count: 3, tensor_data_offset: bytes.len() as u64 - 16 }
        );
        let content = Content::read(&mut Cursor::new(&bytes)).unwrap();
        assert_eq!(content.tensor_data_offset, layout.tensor_data_offset);
    }
}

#[test]
fn the_reader_is_left_where_it_was() {
    let mut bytes = b"pad".to_vec();
    bytes.extend(valid(3));
    let mut cursor = Cursor::new(&bytes);
    cursor.set_position(3);
    check(&mut cursor).unwrap();
    assert_eq!(cursor.position(), 3);
    cursor.set_position(0);
    assert!(matches!(check(&mut cursor), Err(GgufError::Magic { .. })));
    assert_eq!(cursor.position(), 0, "after an error too");
}

#[test]
fn hostile_and_damaged_headers_name_their_field() {
    let huge = 1u64 << 60;
    let table: Vec<(&str, Vec<u8>, Field)> = vec![
        ("wrong magic", Writer::default().bytes(b"GGML").u32(3).u64(0).u64(0).0, Field::Magic),
        ("empty file", Vec::new(), Field::Magic),
        ("version 1", Writer::header(1, 0, 0).0, Field::Version),
        ("version 4", Writer::header(4, 0, 0).0, Field::Version),
        ("tensor count 2^60", Writer::header(3, huge, 0).0, Field::TensorCount),
        ("metadata count 2^60", Writer::header(3, 0, huge).0, Field::MetadataCount),
        ("key length 2^60", Writer::header(3, 0, 1).u64(huge).u32(4).u32(0).0, Field::KeyLength),
        ("string length 2^60", one_entry(8, Writer::default().u64(huge)), Field::StringLength),
        ("array length 2^60", one_entry(9, Writer::default().u32(0).u64(huge)), Field::ArrayLength),
        ("array of strings 2^60", one_entry(9, Writer::default().u32(8).u64(huge)), Field::ArrayLength),
        ("unknown value type", one_entry(13, Writer::default().u32(0)), Field::ValueType),
        ("unknown array type", one_entry(9, Writer::default().u32(99).u64(0)), Field::ArrayType),
        ("a bool of 2", one_entry(7, Writer::default().bytes(&[2])), Field::Value),
        ("a bool array with a 7", one_entry(9, Writer::default().u32(7).u64(3).bytes(&[0, 1, 7])), Field::Value),
        ("alignment 0", Writer::header(3, 0, 1).string("general.alignment").u32(4).u32(0).0, Field::Alignment),
        (
            "tensor name 2^60",
            Writer::header(3, 1, 0).u64(huge).u32(0).u32(0).u64(0).bytes(&[0; 8]).0,
            Field::TensorNameLength,
        ),
        ("5 dimensions", Writer::header(3, 1, 0).string("t").u32(5).bytes(&[0; 60]).0, Field::DimensionCount),
        (
            "dimensions overflowing",
            Writer::header(3, 1, 0).string("t").u32(2).u64(1 << 32).u64(1 << 32).u32(0).u64(0).0,
            Field::Dimension,
        ),
        ("unknown tensor type", Writer::header(3, 1, 0).string("t").u32(1).u64(4).u32(4).u64(0).0, Field::TensorType),
        (
            "a dimension of 0",
            Writer::header(3, 1, 0).string("t").u32(2).u64(4).u64(0).u32(0).u64(0).0,
            Field::Dimension,
        ),
        ("not whole Q8_0 blocks", Writer::header(3, 1, 0).string("t").u32(1).u64(31).u32(8).u64(0).0, Field::Dimension),
        (
            "data past the end",
            Writer::header(3, 1, 0).string("t").u32(1).u64(1 << 40).u32(0).u64(0).0,
            Field::TensorOffset,
        ),
        (
            "offset near 2^64",
            Writer::header(3, 1, 0).string("t").u32(1).u64(4).u32(0).u64(u64::MAX - 3).0,
            Field::TensorOffset,
        ),
    ];
    for (name, bytes, field) in table {
        let err = check_bytes(&bytes).expect_err(name);
        assert_eq!(err.field(), Some(field), "{name}: {err}");
    }
}

#[test]
fn nesting_is_capped() {
    let nested = |depth: u32| {
        let mut value = Writer::default();
        for _ in 1..depth {
            value = value.u32(9).u64(1);
        }
        one_entry(9, value.u32(0).u64(0))
    };
    check_bytes(&nested(MAX_ARRAY_NESTING)).unwrap();
    let err = check_bytes(&nested(MAX_ARRAY_NESTING + 1)).unwrap_err();
    assert_eq!(err.field(), Some(Field::ArrayType), "{err}");
}

#[test]
fn every_cut_of_a_valid_file_is_refused_as_cut_short() {
    let bytes = valid(3);
    for cut in 0..bytes.len() {
        let err = check_bytes(&bytes[..cut]).expect_err(&format!("cut at {cut}"));
        assert!(
            matches!(err, GgufError::Truncated { .. } | GgufError::TooLarge { .. } | GgufError::TensorOutside { .. }),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn messages_say_what_is_wrong_and_where() {
    let err = check_bytes(&Writer::header(3, 1 << 60, 0).0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the tensor count 1152921504606846976 at offset 8 is larger than the file: 8 bytes remain after it"
    );
    let err = check_bytes(&one_entry(8, Writer::default().string("llama"))[..40]).unwrap_err();
    assert_eq!(err.to_string(), "it is cut short: it ends at byte 40, inside the string length at offset 39");
    let err = check_bytes(b"GGML\x03\0\0\0").unwrap_err();
    assert_eq!(err.to_string(), "it does not begin with the GGUF magic (its first bytes are 47 47 4d 4c)");
}

#[test]
fn candle_would_panic_on_what_the_guard_refuses() {
    // Why the guard exists although candle checks counts: a zero alignment divides by zero
    // inside `Content::read`. Run in a thread so the panic stays contained.
    let bytes = Writer::header(3, 0, 1).string("general.alignment").u32(4).u32(0).0;
    assert!(check_bytes(&bytes).is_err());
    let panicked = std::thread::spawn(move || Content::read(&mut Cursor::new(bytes)).is_ok()).join().is_err();
    assert!(panicked, "candle no longer panics on a zero alignment: the guard's reason changed");
}
