//! What a YAML document may cost once parsed, checked on its events before serde_yaml
//! builds anything.
//!
//! serde_yaml bounds how often aliases may be used, not what they expand to: one anchored
//! mapping of a few thousand nodes, referred to a few thousand times, is a kilobyte-sized file
//! that expands to millions of nodes in a `serde_yaml::Value` (a playbook's `with:` or a
//! node config's first read). Anchors and aliases are allowed (they are handy in a long
//! config), but what aliases add to a document is bounded here, in nodes and in scalar
//! bytes, and so is nesting. The walk keeps one size per anchor and one frame per open
//! collection, so it costs no more than the document's own events.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

/// Collections nested deeper than this are refused (serde_yaml's own limit is 128).
pub const DEPTH_MAX: usize = 64;
/// Nodes that aliases may add to a document, all aliases together.
pub const ALIAS_NODES_MAX: u64 = 4_096;
/// Scalar bytes that aliases may add to a document, all aliases together.
pub const ALIAS_BYTES_MAX: u64 = 256 << 10;

/// A document past one of the limits, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {reason}")]
pub struct LimitError {
    /// 1-based line of the node that went past the limit.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Which limit, and by how much.
    pub reason: String,
}

/// Nodes and scalar bytes of a subtree, as it expands.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: u64,
    bytes: u64,
}

impl Size {
    fn add(&mut self, other: Size) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }
}

struct Open {
    anchor: usize,
    size: Size,
}

/// Checks `text` against [`DEPTH_MAX`], [`ALIAS_NODES_MAX`] and [`ALIAS_BYTES_MAX`].
///
/// A document that does not parse passes (serde_yaml reports the syntax error with its own
/// position), except where the parser gave up on nesting. Only what was read before the syntax
/// error is checked.
pub fn check(text: &str) -> Result<(), LimitError> {
    let mut parser = Parser::new_from_str(text);
    let mut open: Vec<Open> = Vec::new();
    let mut anchors: HashMap<usize, Size> = HashMap::new();
    let mut through_aliases = Size::default();
    let at = |mark: Marker, reason: String| LimitError {
        line: mark.line(),
        column: mark.col() + 1,
        reason,
    };
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(next) => next,
            // The scanner reads ahead through a run of flow openings (`[[[[...`) and stops at
            // 256 levels before the depth check sees them: a limit, not a syntax error, and
            // serde_yaml would spend tens of megabytes on the same run.
            Err(e) if e.info().contains("recursion limit") => {
                return Err(at(
                    *e.marker(),
                    format!("nested more than {DEPTH_MAX} collections deep"),
                ))
            }
            Err(_) => return Ok(()),
        };
        let done = match event {
            Event::StreamEnd => return Ok(()),
            Event::Scalar(value, _, anchor, _) => {
                let size = Size {
                    nodes: 1,
                    bytes: value.len() as u64,
                };
                if anchor > 0 {
                    anchors.insert(anchor, size);
                }
                Some(size)
            }
            Event::Alias(anchor) => {
                // An alias to an anchor still open (a recursive document) counts as one node;
                // serde_yaml refuses it.
                let size = anchors
                    .get(&anchor)
                    .copied()
                    .unwrap_or(Size { nodes: 1, bytes: 0 });
                through_aliases.add(size);
                if through_aliases.nodes > ALIAS_NODES_MAX {
                    return Err(at(
                        mark,
                        format!(
                            "aliases expand this document by more than {ALIAS_NODES_MAX} nodes"
                        ),
                    ));
                }
                if through_aliases.bytes > ALIAS_BYTES_MAX {
                    return Err(at(
                        mark,
                        format!(
                            "aliases expand this document by more than {ALIAS_BYTES_MAX} bytes of scalars"
                        ),
                    ));
                }
                Some(size)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= DEPTH_MAX {
                    return Err(at(
                        mark,
                        format!("nested more than {DEPTH_MAX} collections deep"),
                    ));
                }
                open.push(Open {
                    anchor,
                    size: Size { nodes: 1, bytes: 0 },
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let closed = open.pop().expect("the parser balances starts and ends");
                if closed.anchor > 0 {
                    anchors.insert(closed.anchor, closed.size);
                }
                Some(closed.size)
            }
            Event::Nothing | Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => None,
        };
        if let (Some(size), Some(parent)) = (done, open.last_mut()) {
            parent.size.add(size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_documents_and_modest_aliases_pass() {
        check("a: 1\nb: [x, y, {c: d}]\n").unwrap();
        let modest = "base: &base {security.protocol: SSL, retries: 3}\n\
                      a: {client: *base}\nb: {client: *base}\n";
        check(modest).unwrap();
        // It is what serde_yaml reads, too.
        let v: serde_yaml::Value = serde_yaml::from_str(modest).unwrap();
        assert_eq!(v["b"]["client"]["retries"], serde_yaml::Value::from(3));
    }

    #[test]
    fn a_wide_anchor_referred_to_many_times_is_refused_where_it_crosses_the_limit() {
        // 401 nodes, referred to 100 times: 40,100 nodes from aliases in a 3 KB file.
        let items: Vec<String> = (0..200).map(|i| format!("k{i}: v")).collect();
        let mut text = format!("wide: &w {{{}}}\nuses:\n", items.join(", "));
        for _ in 0..100 {
            text.push_str("  - *w\n");
        }
        let err = check(&text).unwrap_err();
        // The anchor is 401 nodes (the mapping, 200 keys, 200 values): the 11th use passes
        // 4,096, on line 2 + 11.
        assert_eq!(err.line, 2 + 11, "{err}");
        assert!(err.reason.contains("4096 nodes"), "{err}");
    }

    #[test]
    fn an_exponential_bomb_is_refused_at_its_first_expensive_level() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for name in ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'] {
            text.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 10].join(", ")
            ));
            prev = name;
        }
        let err = check(&text).unwrap_err();
        // b adds 110 nodes, c 1,110, d 11,110: d is the line that crosses 4,096.
        assert_eq!(err.line, 4, "{err}");
    }

    #[test]
    fn a_long_scalar_repeated_is_refused_by_bytes() {
        let text = |uses: usize| {
            format!(
                "big: &big \"{}\"\nuses: [{}]\n",
                "x".repeat(100_000),
                vec!["*big"; uses].join(", ")
            )
        };
        // 200,000 bytes through aliases pass, 300,000 do not (the limit is 262,144).
        check(&text(2)).unwrap();
        let err = check(&text(3)).unwrap_err();
        assert!(err.reason.contains("bytes"), "{err}");
        assert_eq!(err.line, 2);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}1{}", "[".repeat(65), "]".repeat(65));
        let err = check(&text).unwrap_err();
        assert!(err.reason.contains("64 collections"), "{err}");
        check(&format!("{}1{}", "[".repeat(64), "]".repeat(64))).unwrap();
        let very_deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let err = check(&very_deep).unwrap_err();
        assert!(err.reason.contains("64 collections"), "{err}");
    }

    #[test]
    fn a_syntax_error_is_left_to_serde_yaml() {
        check("a: [1, 2\nb: }").unwrap();
    }
}
