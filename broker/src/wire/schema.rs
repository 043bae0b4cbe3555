//! A message layout as data, and a walk over untrusted bytes that checks every length in them
//! against the bytes actually there.
//!
//! The layouts in `messages.rs` mirror, field for field and version for version, what
//! `kafka-protocol` 0.18's generated decoders read (they are in turn generated from Kafka's own
//! message definitions). The walk reads exactly what the decoder would read, but allocates
//! nothing: where the decoder would call `Vec::with_capacity(n)` on a length read off the wire,
//! the walk first checks that `n` elements of the smallest possible encoding fit in the bytes
//! that are left. A frame the walk accepts therefore makes the decoder reserve at most
//! `bytes left / smallest element` elements per array, a bounded multiple of the frame.

use std::fmt;

/// A version no message reaches: a field that is never compact, a struct never flexible.
pub(crate) const NEVER: i16 = i16::MAX;

/// One message or nested struct: its fields in wire order, and from which version it is
/// "flexible" (compact lengths, a tagged-field section at its end).
#[derive(Debug)]
pub(crate) struct Schema {
    /// Kafka's name of the struct, for error messages.
    pub name: &'static str,
    /// The versions the decoder accepts, inclusive.
    pub versions: (i16, i16),
    /// First flexible version, or [`NEVER`].
    pub flexible_from: i16,
    /// Fields in wire order; tagged fields are read in the tagged section instead.
    pub fields: &'static [Field],
}

/// One field of a [`Schema`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    /// Kafka's field name, for error messages.
    pub name: &'static str,
    /// Versions in which the field is on the wire, inclusive.
    pub versions: (i16, i16),
    /// First version whose encoding of this field is compact (varint lengths).
    pub compact_from: i16,
    /// The field's tag if it is a tagged field.
    pub tag: Option<u32>,
    /// What is on the wire.
    pub kind: Kind,
}

/// The wire type of a field.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// One byte.
    Bool,
    /// One byte.
    Int8,
    /// Two bytes.
    Int16,
    /// Four bytes.
    Int32,
    /// Eight bytes.
    Int64,
    /// Sixteen bytes.
    Uuid,
    /// A string: i16 length (compact: varint length + 1), -1 / 0 for null.
    Str {
        /// Whether null decodes.
        nullable: bool,
    },
    /// Bytes (and record sets): i32 length (compact: varint length + 1).
    Bytes {
        /// Whether null decodes.
        nullable: bool,
    },
    /// An array: i32 count (compact: varint count + 1).
    Array {
        /// The element type.
        of: Elem,
        /// Whether null decodes.
        nullable: bool,
    },
    /// A nested struct, inline.
    Struct(&'static Schema),
}

/// The element type of an array.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Elem {
    /// i32 elements.
    Int32,
    /// Non-null strings.
    Str,
    /// Struct elements.
    Struct(&'static Schema),
}

/// Builds a field present in `min..=max`, never compact and untagged.
pub(crate) const fn f(name: &'static str, min: i16, max: i16, kind: Kind) -> Field {
    Field {
        name,
        versions: (min, max),
        compact_from: NEVER,
        tag: None,
        kind,
    }
}

impl Field {
    /// The same field, compact from `version` on.
    pub(crate) const fn compact_from(mut self, version: i16) -> Field {
        self.compact_from = version;
        self
    }

    /// The same field, tagged with `tag` (tagged fields are always compact).
    pub(crate) const fn tag(mut self, tag: u32) -> Field {
        self.tag = Some(tag);
        self.compact_from = 0;
        self
    }

    fn present_in(&self, version: i16) -> bool {
        self.versions.0 <= version && version <= self.versions.1
    }
}

/// A non-null string field.
pub(crate) const STR: Kind = Kind::Str { nullable: false };
/// A nullable string field.
pub(crate) const NULLABLE_STR: Kind = Kind::Str { nullable: true };
/// A non-null bytes field.
pub(crate) const BYTES: Kind = Kind::Bytes { nullable: false };
/// A nullable bytes (or records) field.
pub(crate) const NULLABLE_BYTES: Kind = Kind::Bytes { nullable: true };

/// A non-null array of structs.
pub(crate) const fn array(of: &'static Schema) -> Kind {
    Kind::Array {
        of: Elem::Struct(of),
        nullable: false,
    }
}

/// A nullable array of structs.
pub(crate) const fn nullable_array(of: &'static Schema) -> Kind {
    Kind::Array {
        of: Elem::Struct(of),
        nullable: true,
    }
}

/// Why bytes do not fit their layout. `path` names the field, e.g.
/// `FetchRequest.topics[3].partitions`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct WireError {
    /// Where in the message.
    pub path: String,
    /// What is wrong there.
    pub problem: Problem,
}

/// What is wrong with a length or a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The bytes end inside a field.
    #[error("the message ends inside this field")]
    Truncated,
    /// An array claims more elements than the bytes left could hold.
    #[error("array of {count} elements of at least {min_element_bytes} bytes each cannot fit in the {left_bytes} bytes left")]
    ArrayTooLong {
        /// Claimed element count.
        count: u64,
        /// Smallest encoding of one element.
        min_element_bytes: usize,
        /// Bytes after the count.
        left_bytes: usize,
    },
    /// A string or bytes field claims more bytes than are left.
    #[error("length {length} exceeds the {left_bytes} bytes left")]
    TooLong {
        /// Claimed length.
        length: u64,
        /// Bytes after the length.
        left_bytes: usize,
    },
    /// A negative length other than -1, or null where the field is not nullable.
    #[error("invalid length {0}")]
    BadLength(i64),
    /// A varint of more than five bytes.
    #[error("varint longer than five bytes")]
    BadVarint,
    /// A known tag in a version that does not have it.
    #[error("tag {tag} is not valid in version {version}")]
    TagNotInVersion {
        /// The tag.
        tag: u32,
        /// The message version.
        version: i16,
    },
    /// A known tagged field whose content does not match its declared size.
    #[error("tagged field {tag} declares {declared_bytes} bytes but holds {actual_bytes}")]
    TagSizeMismatch {
        /// The tag.
        tag: u32,
        /// Declared size.
        declared_bytes: usize,
        /// Size its content decodes to.
        actual_bytes: usize,
    },
    /// The version is outside what the layout covers.
    #[error("version {0} is not covered")]
    Version(i16),
}

/// A read position in untrusted bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Problem> {
        if self.left() < n {
            return Err(Problem::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn i16(&mut self) -> Result<i16, Problem> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, Problem> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned varint of at most five bytes, as Kafka's (and the crate's) decoder.
    fn varint(&mut self) -> Result<u32, Problem> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let byte = self.take(1)?[0];
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Problem::BadVarint)
    }
}

/// Field path for error messages, built only on the error path.
#[derive(Clone, Copy)]
enum Step<'p> {
    Root(&'static str),
    Field(&'p Step<'p>, &'static str),
    Index(&'p Step<'p>, u64),
}

impl fmt::Display for Step<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Root(name) => write!(f, "{name}"),
            Step::Field(parent, name) => write!(f, "{parent}.{name}"),
            Step::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn fail(at: &Step<'_>, problem: Problem) -> WireError {
    WireError {
        path: at.to_string(),
        problem,
    }
}

/// Checks that `bytes` hold a `schema` message of `version` whose every length fits; returns the
/// number of bytes the message occupies (the decoder ignores what follows, and so do we).
pub(crate) fn walk(
    schema: &'static Schema,
    version: i16,
    bytes: &[u8],
) -> Result<usize, WireError> {
    let root = Step::Root(schema.name);
    if version < schema.versions.0 || version > schema.versions.1 {
        return Err(fail(&root, Problem::Version(version)));
    }
    let mut cur = Cursor { buf: bytes, pos: 0 };
    walk_struct(schema, version, &mut cur, &root)?;
    Ok(cur.pos)
}

fn walk_struct(
    schema: &'static Schema,
    version: i16,
    cur: &mut Cursor<'_>,
    at: &Step<'_>,
) -> Result<(), WireError> {
    for field in schema.fields {
        if field.tag.is_none() && field.present_in(version) {
            let here = Step::Field(at, field.name);
            walk_kind(
                field.kind,
                version,
                version >= field.compact_from,
                cur,
                &here,
            )?;
        }
    }
    if version < schema.flexible_from {
        return Ok(());
    }
    let count = cur.varint().map_err(|p| fail(at, p))?;
    for _ in 0..count {
        let tag = cur.varint().map_err(|p| fail(at, p))?;
        let size_bytes = cur.varint().map_err(|p| fail(at, p))? as usize;
        if size_bytes > cur.left() {
            return Err(fail(
                at,
                Problem::TooLong {
                    length: size_bytes as u64,
                    left_bytes: cur.left(),
                },
            ));
        }
        let known = schema.fields.iter().find(|f| f.tag == Some(tag));
        match known {
            Some(field) if field.present_in(version) => {
                let here = Step::Field(at, field.name);
                let start = cur.pos;
                walk_kind(field.kind, version, true, cur, &here)?;
                let actual_bytes = cur.pos - start;
                if actual_bytes != size_bytes {
                    return Err(fail(
                        &here,
                        Problem::TagSizeMismatch {
                            tag,
                            declared_bytes: size_bytes,
                            actual_bytes,
                        },
                    ));
                }
            }
            Some(_) => return Err(fail(at, Problem::TagNotInVersion { tag, version })),
            None => {
                cur.take(size_bytes).map_err(|p| fail(at, p))?;
            }
        }
    }
    Ok(())
}

/// Reads a length prefix: `Ok(None)` for null, `Ok(Some(n))` otherwise. `wide` selects the i32
/// (bytes, arrays) over the i16 (strings) prefix of non-compact encodings.
fn length(
    cur: &mut Cursor<'_>,
    compact: bool,
    wide: bool,
    nullable: bool,
) -> Result<Option<u64>, Problem> {
    let raw: i64 = if compact {
        i64::from(cur.varint()?) - 1
    } else if wide {
        i64::from(cur.i32()?)
    } else {
        i64::from(cur.i16()?)
    };
    match raw {
        -1 if nullable => Ok(None),
        n if n < 0 => Err(Problem::BadLength(n)),
        n => Ok(Some(n as u64)),
    }
}

fn walk_kind(
    kind: Kind,
    version: i16,
    compact: bool,
    cur: &mut Cursor<'_>,
    at: &Step<'_>,
) -> Result<(), WireError> {
    let fixed = |cur: &mut Cursor<'_>, n: usize| cur.take(n).map(|_| ()).map_err(|p| fail(at, p));
    match kind {
        Kind::Bool | Kind::Int8 => fixed(cur, 1),
        Kind::Int16 => fixed(cur, 2),
        Kind::Int32 => fixed(cur, 4),
        Kind::Int64 => fixed(cur, 8),
        Kind::Uuid => fixed(cur, 16),
        Kind::Str { nullable } => walk_blob(cur, compact, false, nullable, at),
        Kind::Bytes { nullable } => walk_blob(cur, compact, true, nullable, at),
        Kind::Struct(schema) => walk_struct(schema, version, cur, at),
        Kind::Array { of, nullable } => {
            let Some(count) = length(cur, compact, true, nullable).map_err(|p| fail(at, p))? else {
                return Ok(());
            };
            // An element that could encode in zero bytes still counts as one, so a count is
            // never larger than the bytes left: the decoder's loop and its reservation stay
            // proportional to the frame.
            let min_element_bytes = elem_min_bytes(of, version, compact).max(1);
            let left_bytes = cur.left();
            if count.saturating_mul(min_element_bytes as u64) > left_bytes as u64 {
                return Err(fail(
                    at,
                    Problem::ArrayTooLong {
                        count,
                        min_element_bytes,
                        left_bytes,
                    },
                ));
            }
            for i in 0..count {
                let here = Step::Index(at, i);
                match of {
                    Elem::Int32 => cur.take(4).map(|_| ()).map_err(|p| fail(&here, p))?,
                    Elem::Str => walk_blob(cur, compact, false, false, &here)?,
                    Elem::Struct(schema) => walk_struct(schema, version, cur, &here)?,
                }
            }
            Ok(())
        }
    }
}

fn walk_blob(
    cur: &mut Cursor<'_>,
    compact: bool,
    wide: bool,
    nullable: bool,
    at: &Step<'_>,
) -> Result<(), WireError> {
    let Some(length_bytes) = length(cur, compact, wide, nullable).map_err(|p| fail(at, p))? else {
        return Ok(());
    };
    if length_bytes > cur.left() as u64 {
        return Err(fail(
            at,
            Problem::TooLong {
                length: length_bytes,
                left_bytes: cur.left(),
            },
        ));
    }
    cur.take(length_bytes as usize)
        .map(|_| ())
        .map_err(|p| fail(at, p))
}

/// The fewest bytes one value of `kind` can take on the wire.
fn kind_min_bytes(kind: Kind, version: i16, compact: bool) -> usize {
    let prefix = |wide: bool| match (compact, wide) {
        (true, _) => 1,
        (false, true) => 4,
        (false, false) => 2,
    };
    match kind {
        Kind::Bool | Kind::Int8 => 1,
        Kind::Int16 => 2,
        Kind::Int32 => 4,
        Kind::Int64 => 8,
        Kind::Uuid => 16,
        Kind::Str { .. } => prefix(false),
        Kind::Bytes { .. } | Kind::Array { .. } => prefix(true),
        Kind::Struct(schema) => struct_min_bytes(schema, version),
    }
}

fn elem_min_bytes(of: Elem, version: i16, compact: bool) -> usize {
    match of {
        Elem::Int32 => 4,
        Elem::Str => {
            if compact {
                1
            } else {
                2
            }
        }
        Elem::Struct(schema) => struct_min_bytes(schema, version),
    }
}

fn struct_min_bytes(schema: &'static Schema, version: i16) -> usize {
    let fields: usize = schema
        .fields
        .iter()
        .filter(|f| f.tag.is_none() && f.present_in(version))
        .map(|f| kind_min_bytes(f.kind, version, version >= f.compact_from))
        .sum();
    // A flexible struct ends with at least the one-byte count of its tagged fields.
    fields + usize::from(version >= schema.flexible_from)
}
