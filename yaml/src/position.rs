//! Where a node of a YAML document is, by its path (`flows[1].target`).
//!
//! serde_yaml places an error raised while deserializing a value at the enclosing list, which
//! for a flow-level mistake is the first flow. `serde_path_to_error` knows the path of the
//! value at fault; this module walks the document's events (yaml-rust2, which reports a mark
//! for each) to turn that path into a line and column.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A mapping value by its key.
    Key(String),
    /// A sequence element by its index.
    Index(usize),
}

enum Frame {
    Map { key: Option<String>, at_key: bool },
    Seq { next_index: usize },
}

struct Finder<'p> {
    want: &'p [Step],
    stack: Vec<Frame>,
    path: Vec<Step>,
    found: Option<(usize, usize)>,
    /// The wanted node is a block mapping, whose start mark lies after its first key; the
    /// first key's mark is taken instead.
    found_at_next_scalar: bool,
}

impl Finder<'_> {
    /// Called at the start of every node; returns false if the node is a mapping key.
    fn enter_node(&mut self, mark: Marker, scalar_key: Option<&str>, mapping: bool) -> bool {
        if std::mem::take(&mut self.found_at_next_scalar) {
            self.found = Some((mark.line(), mark.col() + 1));
        }
        match self.stack.last_mut() {
            Some(Frame::Map { key, at_key }) if *at_key => {
                *key = scalar_key.map(str::to_string);
                *at_key = false;
                return false;
            }
            Some(Frame::Map { key, at_key }) => {
                *at_key = true;
                self.path.push(Step::Key(key.clone().unwrap_or_default()));
            }
            Some(Frame::Seq { next_index }) => {
                self.path.push(Step::Index(*next_index));
                *next_index += 1;
            }
            None => {}
        }
        if self.found.is_none() && self.path == self.want {
            if mapping {
                self.found_at_next_scalar = true;
            } else {
                self.found = Some((mark.line(), mark.col() + 1));
            }
        }
        true
    }

    fn leave_node(&mut self, was_value: bool) {
        if was_value && !self.stack.is_empty() {
            self.path.pop();
        }
    }
}

impl MarkedEventReceiver for Finder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                let is_value = self.enter_node(mark, Some(&value), false);
                self.leave_node(is_value);
            }
            Event::Alias(_) => {
                let is_value = self.enter_node(mark, None, false);
                self.leave_node(is_value);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A collection used as a mapping key is not something a config file does;
                // treat it as a value so the walk stays balanced.
                let mapping = matches!(ev, Event::MappingStart(..));
                let _ = self.enter_node(mark, None, mapping);
                self.stack.push(if mapping {
                    Frame::Map {
                        key: None,
                        at_key: true,
                    }
                } else {
                    Frame::Seq { next_index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.leave_node(true);
            }
            _ => {}
        }
    }
}

/// 1-based line and column of the node at `path` in `text`, if the text parses and has it.
pub fn position_of(text: &str, path: &[Step]) -> Option<(usize, usize)> {
    let mut finder = Finder {
        want: path,
        stack: Vec::new(),
        path: Vec::new(),
        found: None,
        found_at_next_scalar: false,
    };
    Parser::new_from_str(text).load(&mut finder, false).ok()?;
    finder.found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_in_nested_mappings_and_lists() {
        let text =
            "a:\n  b: 1\nflows:\n  - source: x\n    target: y\n  - source: z\n    target: [p, q]\n";
        let key = |k: &str| Step::Key(k.to_string());
        assert_eq!(position_of(text, &[key("a"), key("b")]), Some((2, 6)));
        assert_eq!(
            position_of(text, &[key("flows"), Step::Index(1)]),
            Some((6, 5))
        );
        assert_eq!(
            position_of(
                text,
                &[key("flows"), Step::Index(1), key("target"), Step::Index(1)]
            ),
            Some((7, 17))
        );
        assert_eq!(
            position_of(text, &[key("flows"), Step::Index(0), key("target")]),
            Some((5, 13))
        );
        assert_eq!(position_of(text, &[key("nope")]), None);
        assert_eq!(
            position_of("a: [", &[key("a")]),
            None,
            "unparsable text has no positions"
        );
    }
}
