//! A bounded first read of a GGUF file's header, metadata and tensor table, before candle reads
//! it: a hostile or damaged file becomes a clear error naming the field and its offset, instead of
//! a panic or an allocation the size of a number written in the file.
//!
//! Why, when candle 0.11.1 already checks its counts against the bytes left: candle still panics
//! on a `general.alignment` of 0 (a division by zero in `Content::read`), on tensor dimensions
//! whose product overflows (`TensorInfo::read`, reached by every tensor load), views the empty
//! buffer of a tensor with no elements as a misaligned slice (undefined behaviour; an abort that
//! `catch_unwind` cannot stop under debug assertions), and builds a 32-byte `Value` for every byte
//! of a `u8` array, so a metadata array is bounded only by the file's size times 32. This guard walks the same structure with no allocation at all: every
//! count and length is checked against the bytes remaining before anything is skipped or read,
//! strings are skipped rather than read, arrays nest at most [`MAX_ARRAY_NESTING`] deep, and the
//! metadata holds at most [`MAX_METADATA_VALUES`] values.
//!
//! Follows the GGUF spec (`ggml/docs/gguf.md`), versions 2 and 3 (troupe's Q8_0 copy is written
//! by candle as version 2; version 1 files predate 2023 and are refused). Offsets in errors are
//! from the position the reader was at when [`check`] was called, which is where it is left.

use std::io::{Read, Seek, SeekFrom};

use candle_core::quantized::GgmlDType;

/// Arrays inside arrays, counting the outermost: the spec allows nesting and no model file uses
/// it, so a small cap bounds the recursion without refusing anything real.
pub const MAX_ARRAY_NESTING: u32 = 4;
/// Scalars and array elements in all the metadata. A large tokenizer (150,000 tokens, as many
/// merges and token types) holds under a million; candle spends ~32 bytes on each, so this caps
/// its metadata at about 512 MB whatever the file's size.
pub const MAX_METADATA_VALUES: u64 = 1 << 24;
/// The spec's limit on a metadata key's length.
pub const MAX_KEY_LENGTH: u64 = 65_535;
/// ggml's `GGML_MAX_DIMS`, which candle enforces too.
const MAX_DIMENSIONS: u32 = 4;
/// The spec's alignment of the tensor data when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
const ALIGNMENT_KEY: &[u8] = b"general.alignment";
/// Bytes skipped by reading rather than seeking: small skips stay inside a `BufReader`'s buffer.
const SKIP_BUFFER: usize = 4096;

/// The smallest metadata entry: key length, value type, a one-byte value.
const MIN_ENTRY: u64 = 8 + 4 + 1;
/// The smallest tensor-table entry: name length, dimension count, type, offset.
const MIN_TENSOR_INFO: u64 = 8 + 4 + 4 + 8;

/// What a valid file's header says, for callers and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgufLayout {
    pub version: u32,
    pub tensor_count: u64,
    pub metadata_count: u64,
    /// Where the tensor data begins (aligned), from the reader's starting position.
    pub tensor_data_offset: u64,
}

/// The part of the file an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Magic,
    Version,
    TensorCount,
    MetadataCount,
    KeyLength,
    ValueType,
    Value,
    StringLength,
    ArrayType,
    ArrayLength,
    TensorNameLength,
    DimensionCount,
    Dimension,
    TensorType,
    TensorOffset,
    Alignment,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::Magic => "magic",
            Field::Version => "version",
            Field::TensorCount => "tensor count",
            Field::MetadataCount => "metadata count",
            Field::KeyLength => "metadata key length",
            Field::ValueType => "metadata value type",
            Field::Value => "metadata value",
            Field::StringLength => "string length",
            Field::ArrayType => "array element type",
            Field::ArrayLength => "array length",
            Field::TensorNameLength => "tensor name length",
            Field::DimensionCount => "tensor dimension count",
            Field::Dimension => "tensor dimensions",
            Field::TensorType => "tensor type",
            Field::TensorOffset => "tensor offset",
            Field::Alignment => "general.alignment",
        })
    }
}

/// Why a file is not one troupe can read. Callers prefix the path.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("reading it failed at offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("it does not begin with the GGUF magic (its first bytes are {found})")]
    Magic { found: String },
    #[error("its GGUF version {version} is not one troupe reads (2 or 3)")]
    Version { version: u32 },
    #[error("it is cut short: it ends at byte {size}, inside the {field} at offset {offset}")]
    Truncated { field: Field, offset: u64, size: u64 },
    #[error("the {field} {value} at offset {offset} is larger than the file: {remaining} bytes remain after it")]
    TooLarge { field: Field, offset: u64, value: u64, remaining: u64 },
    #[error("the {field} at offset {offset} is invalid: {problem}")]
    Invalid { field: Field, offset: u64, problem: String },
    #[error(
        "tensor {index}'s data (its offset is at byte {offset}) ends at byte {end}, past the end of the file at {size}"
    )]
    TensorOutside { index: u64, offset: u64, end: u64, size: u64 },
}

impl GgufError {
    /// The field the error is about, when it is about one.
    pub fn field(&self) -> Option<Field> {
        match self {
            GgufError::Magic { .. } => Some(Field::Magic),
            GgufError::Version { .. } => Some(Field::Version),
            GgufError::Truncated { field, .. }
            | GgufError::TooLarge { field, .. }
            | GgufError::Invalid { field, .. } => Some(*field),
            GgufError::TensorOutside { .. } => Some(Field::TensorOffset),
            GgufError::Io { .. } => None,
        }
    }
}

/// Checks that `reader` holds a GGUF file candle can read without panicking or allocating more
/// than the file warrants; leaves the reader where it was. Allocates nothing that depends on the
/// file (an error's text aside).
pub fn check<R: Read + Seek>(reader: &mut R) -> Result<GgufLayout, GgufError> {
    let io = |offset| move |source| GgufError::Io { offset, source };
    let start = reader.stream_position().map_err(io(0))?;
    let end = reader.seek(SeekFrom::End(0)).map_err(io(0))?;
    reader.seek(SeekFrom::Start(start)).map_err(io(0))?;
    let mut bounded = Bounded { inner: reader, start, pos: 0, size: end.saturating_sub(start) };
    let layout = bounded.layout();
    let restored = bounded.inner.seek(SeekFrom::Start(start)).map_err(io(0));
    let layout = layout?;
    restored?;
    Ok(layout)
}

/// The value types of the spec, by their numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl Kind {
    fn from_u32(value: u32) -> Option<Kind> {
        Some(match value {
            0 => Kind::U8,
            1 => Kind::I8,
            2 => Kind::U16,
            3 => Kind::I16,
            4 => Kind::U32,
            5 => Kind::I32,
            6 => Kind::F32,
            7 => Kind::Bool,
            8 => Kind::String,
            9 => Kind::Array,
            10 => Kind::U64,
            11 => Kind::I64,
            12 => Kind::F64,
            _ => return None,
        })
    }

    /// The bytes of a value of this kind, when it has a fixed size.
    fn fixed_size(self) -> Option<u64> {
        match self {
            Kind::U8 | Kind::I8 | Kind::Bool => Some(1),
            Kind::U16 | Kind::I16 => Some(2),
            Kind::U32 | Kind::I32 | Kind::F32 => Some(4),
            Kind::U64 | Kind::I64 | Kind::F64 => Some(8),
            Kind::String | Kind::Array => None,
        }
    }

    /// The fewest bytes a value of this kind takes: a string's length, an array's type and length.
    fn min_size(self) -> u64 {
        match self {
            Kind::String => 8,
            Kind::Array => 4 + 8,
            fixed => fixed.fixed_size().unwrap_or(1),
        }
    }
}

/// The tensor types candle reads, by ggml's numbers (candle's `GgmlDType::from_u32` is private).
fn tensor_type(value: u32) -> Option<GgmlDType> {
    Some(match value {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// A reader that knows how many bytes are left, and says which field ran out.
struct Bounded<'r, R> {
    inner: &'r mut R,
    /// Where the file starts in `inner`.
    start: u64,
    /// Bytes consumed since `start`; never more than `size`.
    pos: u64,
    size: u64,
}

/// Counts kept while walking the metadata.
struct Walk {
    values: u64,
    alignment: u64,
}

impl<R: Read + Seek> Bounded<'_, R> {
    fn remaining(&self) -> u64 {
        self.size - self.pos
    }

    fn truncated(&self, field: Field, offset: u64) -> GgufError {
        GgufError::Truncated { field, offset, size: self.size }
    }

    fn fill(&mut self, buf: &mut [u8], field: Field, offset: u64) -> Result<(), GgufError> {
        if buf.len() as u64 > self.remaining() {
            return Err(self.truncated(field, offset));
        }
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            // The file shrank since its size was taken.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(self.truncated(field, offset)),
            Err(source) => Err(GgufError::Io { offset: self.pos, source }),
        }
    }

    fn array<const N: usize>(&mut self, field: Field) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        let offset = self.pos;
        self.fill(&mut buf, field, offset)?;
        Ok(buf)
    }

    fn u32(&mut self, field: Field) -> Result<u32, GgufError> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: Field) -> Result<u64, GgufError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// Passes over `n` bytes of the value whose length field is at `offset`.
    fn skip(&mut self, n: u64, field: Field, offset: u64) -> Result<(), GgufError> {
        if n > self.remaining() {
            return Err(self.truncated(field, offset));
        }
        if n <= SKIP_BUFFER as u64 {
            let mut buf = [0u8; SKIP_BUFFER];
            return self.fill(&mut buf[..n as usize], field, offset);
        }
        let target = self.start + self.pos + n;
        self.inner.seek(SeekFrom::Start(target)).map_err(|source| GgufError::Io { offset: self.pos, source })?;
        self.pos += n;
        Ok(())
    }

    /// A count or length at the current position, refused when `count` items of at least
    /// `min_size` bytes each cannot fit in what is left.
    fn count(&mut self, field: Field, min_size: u64) -> Result<(u64, u64), GgufError> {
        let offset = self.pos;
        let value = self.u64(field)?;
        let remaining = self.remaining();
        if value.saturating_mul(min_size) > remaining {
            return Err(GgufError::TooLarge { field, offset, value, remaining });
        }
        Ok((value, offset))
    }

    fn kind(&mut self, field: Field) -> Result<Kind, GgufError> {
        let offset = self.pos;
        let value = self.u32(field)?;
        Kind::from_u32(value).ok_or_else(|| GgufError::Invalid {
            field,
            offset,
            problem: format!("{value} is not a GGUF value type"),
        })
    }

    fn layout(&mut self) -> Result<GgufLayout, GgufError> {
        let magic: [u8; 4] = self.array(Field::Magic)?;
        if &magic != b"GGUF" {
            let found = magic.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
            return Err(GgufError::Magic { found });
        }
        let version = self.u32(Field::Version)?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version { version });
        }
        let (tensor_count, _) = self.count(Field::TensorCount, MIN_TENSOR_INFO)?;
        let (metadata_count, _) = self.count(Field::MetadataCount, MIN_ENTRY)?;
        let mut walk = Walk { values: 0, alignment: DEFAULT_ALIGNMENT };
        for _ in 0..metadata_count {
            self.entry(&mut walk)?;
        }
        // The largest end of any tensor's data, from the start of the data, and whose it is.
        let mut furthest: Option<(u64, u64, u64)> = None;
        for index in 0..tensor_count {
            let (end, offset) = self.tensor_info()?;
            if furthest.is_none_or(|(far, _, _)| end > far) {
                furthest = Some((end, index, offset));
            }
        }
        let tensor_data_offset = self.pos.div_ceil(walk.alignment).saturating_mul(walk.alignment);
        if let Some((end, index, offset)) = furthest {
            let end = tensor_data_offset.saturating_add(end);
            if end > self.size {
                return Err(GgufError::TensorOutside { index, offset, end, size: self.size });
            }
        }
        Ok(GgufLayout { version, tensor_count, metadata_count, tensor_data_offset })
    }

    /// One metadata entry: key, value type, value.
    fn entry(&mut self, walk: &mut Walk) -> Result<(), GgufError> {
        let (key_length, key_at) = self.count(Field::KeyLength, 1)?;
        if key_length > MAX_KEY_LENGTH {
            let problem = format!("a key of {key_length} bytes is longer than the spec's {MAX_KEY_LENGTH}");
            return Err(GgufError::Invalid { field: Field::KeyLength, offset: key_at, problem });
        }
        // Only `general.alignment` matters here, so only a key of its length is read.
        let is_alignment = if key_length == ALIGNMENT_KEY.len() as u64 {
            let key: [u8; ALIGNMENT_KEY.len()] = self.array(Field::KeyLength)?;
            key == ALIGNMENT_KEY
        } else {
            self.skip(key_length, Field::KeyLength, key_at)?;
            false
        };
        let kind = self.kind(Field::ValueType)?;
        if is_alignment { self.alignment(kind, walk) } else { self.value(kind, 0, walk) }
    }

    /// `general.alignment`, read as candle reads it: a non-negative integer of up to 32 bits sets
    /// the alignment, anything else leaves the default. Zero is refused: candle divides by it.
    fn alignment(&mut self, kind: Kind, walk: &mut Walk) -> Result<(), GgufError> {
        let offset = self.pos;
        let value = match kind {
            Kind::U8 => Some(u64::from(self.array::<1>(Field::Alignment)?[0])),
            Kind::I8 => u64::try_from(i8::from_le_bytes(self.array(Field::Alignment)?)).ok(),
            Kind::U16 => Some(u64::from(u16::from_le_bytes(self.array(Field::Alignment)?))),
            Kind::I16 => u64::try_from(i16::from_le_bytes(self.array(Field::Alignment)?)).ok(),
            Kind::U32 => Some(u64::from(self.u32(Field::Alignment)?)),
            Kind::I32 => u64::try_from(i32::from_le_bytes(self.array(Field::Alignment)?)).ok(),
            other => return self.value(other, 0, walk),
        };
        walk.values += 1;
        match value {
            Some(0) => Err(GgufError::Invalid {
                field: Field::Alignment,
                offset,
                problem: "an alignment of 0 (it must be a positive power of two, usually 32)".into(),
            }),
            Some(alignment) => {
                walk.alignment = alignment;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Passes over one value of `kind`, `depth` arrays deep.
    fn value(&mut self, kind: Kind, depth: u32, walk: &mut Walk) -> Result<(), GgufError> {
        self.counted(1, walk)?;
        match kind {
            Kind::Bool => self.bools(1),
            Kind::String => {
                let (length, at) = self.count(Field::StringLength, 1)?;
                self.skip(length, Field::StringLength, at)
            }
            Kind::Array => self.array_value(depth + 1, walk),
            fixed => {
                let offset = self.pos;
                self.skip(fixed.min_size(), Field::Value, offset)
            }
        }
    }

    fn array_value(&mut self, depth: u32, walk: &mut Walk) -> Result<(), GgufError> {
        let type_at = self.pos;
        if depth > MAX_ARRAY_NESTING {
            let problem = format!("arrays nested more than {MAX_ARRAY_NESTING} deep");
            return Err(GgufError::Invalid { field: Field::ArrayType, offset: type_at, problem });
        }
        let kind = self.kind(Field::ArrayType)?;
        let (length, length_at) = self.count(Field::ArrayLength, kind.min_size())?;
        match kind.fixed_size() {
            // Fixed-size elements: the count check above bounds the whole array at once.
            Some(size) => {
                self.counted(length, walk)?;
                if kind == Kind::Bool {
                    self.bools(length)
                } else {
                    self.skip(length * size, Field::ArrayLength, length_at)
                }
            }
            // Each element takes at least one byte, so this loop ends within the file's size.
            None => (0..length).try_for_each(|_| self.value(kind, depth, walk)),
        }
    }

    /// `n` bools, each 0 or 1 (candle refuses anything else, so the guard does too).
    fn bools(&mut self, n: u64) -> Result<(), GgufError> {
        let mut left = n;
        let mut buf = [0u8; SKIP_BUFFER];
        while left > 0 {
            let take = left.min(SKIP_BUFFER as u64) as usize;
            let offset = self.pos;
            self.fill(&mut buf[..take], Field::Value, offset)?;
            if let Some(at) = buf[..take].iter().position(|&b| b > 1) {
                let problem = format!("a bool of {}, not 0 or 1", buf[at]);
                return Err(GgufError::Invalid { field: Field::Value, offset: offset + at as u64, problem });
            }
            left -= take as u64;
        }
        Ok(())
    }

    fn counted(&mut self, n: u64, walk: &mut Walk) -> Result<(), GgufError> {
        walk.values = walk.values.saturating_add(n);
        if walk.values > MAX_METADATA_VALUES {
            let problem = format!("the metadata holds more than {MAX_METADATA_VALUES} values");
            return Err(GgufError::Invalid { field: Field::ArrayLength, offset: self.pos, problem });
        }
        Ok(())
    }

    /// One tensor-table entry; returns where its data ends (from the start of the data) and
    /// the offset of its offset field.
    fn tensor_info(&mut self) -> Result<(u64, u64), GgufError> {
        let (name_length, name_at) = self.count(Field::TensorNameLength, 1)?;
        self.skip(name_length, Field::TensorNameLength, name_at)?;
        let dims_at = self.pos;
        let dims = self.u32(Field::DimensionCount)?;
        if dims > MAX_DIMENSIONS {
            let problem = format!("{dims} dimensions; a tensor has at most {MAX_DIMENSIONS}");
            return Err(GgufError::Invalid { field: Field::DimensionCount, offset: dims_at, problem });
        }
        let mut elements: u64 = 1;
        for _ in 0..dims {
            let dim = self.u64(Field::Dimension)?;
            elements = elements.checked_mul(dim).ok_or_else(|| GgufError::Invalid {
                field: Field::Dimension,
                offset: dims_at,
                problem: "the product of the dimensions overflows 64 bits".into(),
            })?;
        }
        // candle views a tensor's bytes as its element type; the empty buffer of a tensor with no
        // elements is not aligned for it, which is undefined behaviour (found by fuzzing: an
        // abort under debug assertions).
        if elements == 0 {
            let problem = "a dimension of 0: the tensor holds no elements".to_owned();
            return Err(GgufError::Invalid { field: Field::Dimension, offset: dims_at, problem });
        }
        let type_at = self.pos;
        let raw = self.u32(Field::TensorType)?;
        let dtype = tensor_type(raw).ok_or_else(|| GgufError::Invalid {
            field: Field::TensorType,
            offset: type_at,
            problem: format!("{raw} is not a tensor type candle reads"),
        })?;
        let block = dtype.block_size() as u64;
        if elements % block != 0 {
            let problem = format!("{elements} elements are not a whole number of {dtype:?} blocks of {block}");
            return Err(GgufError::Invalid { field: Field::Dimension, offset: dims_at, problem });
        }
        let bytes = (elements / block).checked_mul(dtype.type_size() as u64);
        let offset_at = self.pos;
        let offset = self.u64(Field::TensorOffset)?;
        let end = bytes.and_then(|bytes| offset.checked_add(bytes)).ok_or_else(|| GgufError::Invalid {
            field: Field::TensorOffset,
            offset: offset_at,
            problem: format!("the tensor's data at {offset} would end past 2^64"),
        })?;
        Ok((end, offset_at))
    }
}

#[cfg(test)]
mod tests;
