//! Resolving placeholders to the values bound to them, SQLite's way.
//!
//! SQLite numbers parameters in the order their placeholders appear in the
//! text: `?N` is parameter N; a bare `?` and the first occurrence of a named
//! parameter take one more than the largest number assigned so far; a named
//! parameter seen again keeps its number. paxsql binds a positional list by
//! those numbers, and a named list by name (given without the sigil).
//!
//! The placeholders are collected from the syntax tree with their positions
//! and sorted, so the numbering follows the text even where the tree's order
//! does not. Anything doubtful resolves to nothing, which the caller treats
//! as "any key".

use std::collections::HashMap;
use std::ops::ControlFlow;

use paxsql_types::{Params, Value};
use sqlparser::ast::{Value as AstValue, ValueWithSpan, Visit, Visitor};
use sqlparser::tokenizer::Span;

/// The values a statement's placeholders stand for.
#[derive(Debug)]
pub(crate) struct Bindings<'a> {
    params: &'a Params,
    /// SQLite's parameter number of each placeholder, by its start
    /// `(line, column)`; empty when some placeholder has no position.
    numbers: HashMap<(u64, u64), usize>,
    /// Named placeholders (sigil included) per bare name: a name written
    /// with more than one sigil is ambiguous under paxsql's named binding.
    sigils: HashMap<String, Vec<String>>,
}

impl<'a> Bindings<'a> {
    /// Numbers the placeholders of `tree`.
    pub(crate) fn new(tree: &impl Visit, params: &'a Params) -> Self {
        struct Collect(Vec<(u64, u64, String)>, bool);
        impl Visitor for Collect {
            type Break = ();
            fn pre_visit_value(&mut self, v: &ValueWithSpan) -> ControlFlow<()> {
                if let AstValue::Placeholder(text) = &v.value {
                    let at = v.span.start;
                    self.1 |= v.span == Span::empty() || at.line == 0;
                    self.0.push((at.line, at.column, text.clone()));
                }
                ControlFlow::Continue(())
            }
        }
        let mut found = Collect(Vec::new(), false);
        let _ = tree.visit(&mut found);
        let (mut found, unplaced) = (found.0, found.1);
        found.sort();
        let mut numbers = HashMap::new();
        let mut sigils: HashMap<String, Vec<String>> = HashMap::new();
        let mut named: HashMap<&str, usize> = HashMap::new();
        let mut largest = 0usize;
        for (line, column, text) in &found {
            let number = if let Some(n) = text.strip_prefix('?') {
                if n.is_empty() {
                    largest + 1
                } else {
                    match n.parse::<usize>() {
                        Ok(n) if n > 0 => n,
                        _ => continue,
                    }
                }
            } else {
                let bare = text[text.len().min(1)..].to_owned();
                let seen = sigils.entry(bare).or_default();
                if !seen.contains(text) {
                    seen.push(text.clone());
                }
                *named.entry(text).or_insert(largest + 1)
            };
            largest = largest.max(number);
            numbers.insert((*line, *column), number);
        }
        if unplaced {
            numbers.clear();
        }
        Bindings {
            params,
            numbers,
            sigils,
        }
    }

    /// The value bound to the placeholder `text` written at `span`.
    pub(crate) fn value(&self, text: &str, span: Span) -> Option<&'a Value> {
        match self.params {
            Params::None => None,
            Params::Positional(values) => {
                let number = match text.strip_prefix('?') {
                    Some(n) if !n.is_empty() => n.parse::<usize>().ok()?,
                    _ => *self.numbers.get(&(span.start.line, span.start.column))?,
                };
                values.get(number.checked_sub(1)?)
            }
            Params::Named(pairs) => {
                let bare = text.strip_prefix([':', '@', '$'])?;
                if self.sigils.get(bare).is_some_and(|s| s.len() > 1) {
                    return None;
                }
                let mut matching = pairs
                    .iter()
                    .filter(|(name, _)| name == bare || name == text)
                    .map(|(_, v)| v);
                let value = matching.next()?;
                // A name given twice: which one binds is not ours to guess.
                matching.next().is_none().then_some(value)
            }
        }
    }
}
