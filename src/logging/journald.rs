//! The journald layer: turns tracing events (and their spans' fields) into
//! native-protocol datagrams for the [`Output`] (sent by `socket`).

use std::fmt::Write as _;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::hold::{Output, Pending};
use super::socket::put_field;

/// Formats events as journald native-protocol datagrams (fields named as
/// written, upper-cased; span fields included, innermost wins).
pub(super) struct JournaldLayer {
    pub(super) identifier: String,
    pub(super) output: Arc<Output>,
}

/// A span's fields, kept in its extensions for the events inside it.
#[derive(Default)]
struct SpanFields(Vec<(String, String)>);

impl<S> Layer<S> for JournaldLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut v = FieldVisitor::default();
        attrs.record(&mut v);
        span.extensions_mut().insert(SpanFields(v.fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut v = FieldVisitor::default();
        values.record(&mut v);
        let mut ext = span.extensions_mut();
        if let Some(fields) = ext.get_mut::<SpanFields>() {
            for (k, val) in v.fields {
                match fields.0.iter_mut().find(|(n, _)| *n == k) {
                    Some(slot) => slot.1 = val,
                    None => fields.0.push((k, val)),
                }
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields: Vec<(String, String)> = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    fields.extend(f.0.iter().cloned());
                }
            }
        }
        let mut v = FieldVisitor::default();
        event.record(&mut v);
        fields.extend(v.fields);
        let meta = event.metadata();
        let mut d = Vec::with_capacity(256);
        put_field(&mut d, "PRIORITY", priority(*meta.level()));
        put_field(&mut d, "MESSAGE", v.message.as_deref().unwrap_or(""));
        put_field(&mut d, "SYSLOG_IDENTIFIER", &self.identifier);
        put_field(&mut d, "TARGET", meta.target());
        if let Some(file) = meta.file() {
            put_field(&mut d, "CODE_FILE", file);
        }
        if let Some(line) = meta.line() {
            put_field(&mut d, "CODE_LINE", &line.to_string());
        }
        // Innermost (last) value wins, so each name appears once.
        for (i, (name, value)) in fields.iter().enumerate() {
            if fields[i + 1..].iter().any(|(n, _)| n == name) {
                continue;
            }
            put_field(&mut d, name, value);
        }
        self.output.emit(Pending::Journal(d));
    }
}

/// tracing levels as syslog priorities (the mapping tracing-journald uses).
fn priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "5",
        Level::DEBUG => "6",
        Level::TRACE => "7",
    }
}

/// A journal field name from a tracing one: upper-case ASCII letters,
/// digits and `_`, not starting with `_` (journald reserves those) or a digit.
pub fn journal_field_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .skip_while(|c| *c == '_' || c.is_ascii_digit())
        .collect();
    if s.is_empty() {
        "FIELD".to_string()
    } else {
        s
    }
}

/// Collects an event's or span's fields as journal names and text values.
#[derive(Default)]
struct FieldVisitor {
    message: Option<String>,
    fields: Vec<(String, String)>,
}

impl FieldVisitor {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = Some(value);
        } else {
            self.fields.push((journal_field_name(field.name()), value));
        }
    }
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.to_string());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.to_string());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.to_string());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut s = value.to_string();
        let mut src = value.source();
        while let Some(e) = src {
            let _ = write!(s, ": {e}");
            src = e.source();
        }
        self.put(field, s);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}
