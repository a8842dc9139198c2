//! One line of an export back into an event record. A line that is not an
//! event record gives the reason, worded for "line N: REASON".

use std::borrow::Cow;

use super::base64;
use super::parser::{Parser, Scalar};
use super::timestamp;
use crate::codec::validate;
use crate::event::{EventRecord, Text, FIELDS};

/// The entity types an event may have.
const ENTITY_TYPES: [&str; 3] = ["workflow", "stage", "task"];

/// The fields of `metadata`, in the order of `Fields::metadata`.
const METADATA: [&str; 4] = ["correlation_id", "causation_id", "actor", "source_handler"];

/// Values found for named fields, by their position in a list of names (the event's own
/// `FIELDS`, or `METADATA`).
struct Slots<'a, const N: usize> {
    names: &'static [&'static str; N],
    values: [Option<Scalar<'a>>; N],
    /// The slot after the last one filled.
    next: usize,
}

impl<'a, const N: usize> Slots<'a, N> {
    fn new(names: &'static [&'static str; N]) -> Self {
        Slots { names, values: std::array::from_fn(|_| None), next: 0 }
    }

    /// Reads the value of `key` into its slot (or past it, for a field not named).
    fn read(&mut self, p: &mut Parser<'a>, key: &str) -> Result<(), String> {
        let value = p.scalar()?;
        // An export writes the fields in one order: the slot after the last one read is
        // looked at first.
        let i = match self.names.get(self.next) {
            Some(n) if *n == key => Some(self.next),
            _ => self.names.iter().position(|n| *n == key),
        };
        if let Some(i) = i {
            self.values[i] = Some(value);
            self.next = i + 1;
        }
        Ok(())
    }

    fn take(&mut self, name: &str) -> Option<Scalar<'a>> {
        self.names.iter().position(|n| *n == name).and_then(|i| self.values[i].take())
    }
}

struct Fields<'a> {
    scalars: Slots<'a, 11>,
    data: Option<Vec<u8>>,
    data_msgpack: Option<Scalar<'a>>,
    metadata: Option<Slots<'a, 4>>,
}

fn whole(value: Scalar<'_>, name: &str) -> Result<i64, String> {
    match value {
        Scalar::Int(v) => Ok(v),
        Scalar::BigInt(v) => Err(format!("'{name}' is {v}, out of range (at most 19 digits)")),
        other => Err(format!("'{name}' is {}, not a whole number", other.shown())),
    }
}

fn text<'a>(value: Scalar<'a>, name: &str) -> Result<Cow<'a, str>, String> {
    match value {
        Scalar::Str(s) => Ok(s),
        other => Err(format!("'{name}' is {}, not text", other.shown())),
    }
}

fn optional_text<'a>(value: Option<Scalar<'a>>, name: &str) -> Result<Option<Text>, String> {
    match value {
        None | Some(Scalar::Null) => Ok(None),
        Some(v) => text(v, name).map(|s| Some(Text::from(s.as_ref()))),
    }
}

fn metadata<'a>(p: &mut Parser<'a>) -> Result<Slots<'a, 4>, String> {
    if p.peek() != Some(b'{') {
        let shown = p.scalar()?.shown();
        return Err(format!("'metadata' is {shown}, not an object"));
    }
    p.expect(b'{', "'{'")?;
    let mut m = Slots::new(&METADATA);
    p.members(|p, key| m.read(p, &key))?;
    Ok(m)
}

fn fields<'a>(line: &'a str) -> Result<Fields<'a>, String> {
    let mut p = Parser::new(line);
    let not_json = |why: String| format!("not JSON ({why}); a truncated or hand-edited line?");
    if p.peek() != Some(b'{') {
        let what = p.scalar().map_err(not_json)?;
        p.end().map_err(not_json)?;
        return Err(format!(
            "a JSON {}, not an event object",
            match what {
                Scalar::List => "list".to_owned(),
                Scalar::Str(_) => "string".to_owned(),
                other => other.shown(),
            }
        ));
    }
    p.expect(b'{', "'{'").map_err(not_json)?;
    let mut f = Fields { scalars: Slots::new(&FIELDS), data: None, data_msgpack: None, metadata: None };
    // A field's own problem (a wrong type, say) is kept while the rest of the line is
    // still checked as JSON: a line that is not JSON is reported as such first.
    let mut problem: Option<String> = None;
    p.members(|p, key| {
        match key.as_ref() {
            "data" => {
                if p.peek() == Some(b'{') {
                    let mut out = Vec::with_capacity(128);
                    p.transcode(&mut out, 0)?;
                    f.data = Some(out);
                } else {
                    let kind = match p.scalar()? {
                        Scalar::List => "list".to_owned(),
                        other => other.shown(),
                    };
                    problem.get_or_insert(format!("the payload ('data') is {kind}, not an object"));
                }
            }
            "metadata" => match metadata(p) {
                Ok(m) => f.metadata = Some(m),
                Err(why) if why.starts_with("expected") => return Err(why),
                Err(why) => {
                    problem.get_or_insert(why);
                }
            },
            "data_msgpack" => f.data_msgpack = Some(p.scalar()?),
            other => f.scalars.read(p, other)?,
        }
        Ok(())
    })
    .map_err(not_json)?;
    p.end().map_err(not_json)?;
    match problem {
        Some(why) => Err(why),
        None => Ok(f),
    }
}

/// The event record `line` holds, or why it holds none.
pub fn record(line: &str) -> Result<EventRecord, String> {
    let mut f = fields(line)?;
    let mut field = |name: &str| f.scalars.take(name).ok_or_else(|| format!("no '{name}' field"));
    let sequence = whole(field("sequence")?, "sequence")?;
    if sequence < 1 {
        return Err(format!("'sequence' is {sequence}, must be 1 or more"));
    }
    let event_id = text(field("event_id")?, "event_id")?;
    let event_type = text(field("event_type")?, "event_type")?;
    let stamp = text(field("timestamp")?, "timestamp")?;
    let entity_type = text(field("entity_type")?, "entity_type")?;
    let entity_id = text(field("entity_id")?, "entity_id")?;
    let workflow_id = text(field("workflow_id")?, "workflow_id")?;
    let version = whole(field("version")?, "version")?;
    let mut meta = f.metadata.take().ok_or("no 'metadata' field")?;
    let schema_version = whole(field("schema_version")?, "schema_version")?;
    if event_id.is_empty() {
        return Err("'event_id' is empty".into());
    }
    if !ENTITY_TYPES.contains(&entity_type.as_ref()) {
        return Err(format!("'entity_type' is {:?}, not one of {}", entity_type, ENTITY_TYPES.join(", ")));
    }
    let timestamp_us = timestamp::parse(&stamp)?;
    let data = match (f.data.take(), f.data_msgpack.take()) {
        (Some(data), None) => data,
        (None, Some(encoded)) => {
            let encoded = text(encoded, "data_msgpack")?;
            let bytes = base64::decode(encoded.as_bytes())
                .map_err(|why| format!("'data_msgpack' is not base64: {why}"))?;
            validate::validate(&bytes)
                .map_err(|e| format!("'data_msgpack' is not a stored payload: {}", e.0))?;
            if !matches!(
                rmp::Marker::from_u8(bytes[0]),
                rmp::Marker::FixMap(_) | rmp::Marker::Map16 | rmp::Marker::Map32
            ) {
                return Err("the payload ('data_msgpack') is not a map".into());
            }
            bytes
        }
        _ => return Err("needs exactly one of 'data' and 'data_msgpack'".into()),
    };
    let correlation_id = match meta.take("correlation_id") {
        None => return Err("no 'correlation_id' in 'metadata'".into()),
        Some(v) => text(v, "correlation_id")?,
    };
    let actor = match meta.take("actor") {
        None => Text::from("system"),
        Some(v) => Text::from(text(v, "actor")?.as_ref()),
    };
    Ok(EventRecord {
        sequence,
        event_id: Text::from(event_id.as_ref()),
        event_type: Text::from(event_type.as_ref()),
        timestamp_us,
        entity_type: Text::from(entity_type.as_ref()),
        entity_id: Text::from(entity_id.as_ref()),
        workflow_id: Text::from(workflow_id.as_ref()),
        version,
        data,
        correlation_id: Text::from(correlation_id.as_ref()),
        causation_id: optional_text(meta.take("causation_id"), "causation_id")?,
        actor,
        source_handler: optional_text(meta.take("source_handler"), "source_handler")?,
        schema_version,
    })
}

/// What a block of lines held.
#[derive(Default)]
pub struct ReadLines {
    /// The events, each with its line number.
    pub events: Vec<(EventRecord, usize)>,
    /// The bad lines: line number, and why.
    pub bad: Vec<(usize, String)>,
}

/// Reads one line (numbered `number`, its `\n` taken off) into `read`: an event, a bad
/// line, or nothing for a blank one. Returns false for a bad line.
pub fn line(raw: &[u8], number: usize, read: &mut ReadLines) -> bool {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    let parsed = match crate::codec::utf8(raw) {
        Ok(line) => record(line),
        Err(e) => Err(format!(
            "not UTF-8 text (the byte at position {} cannot be read); a damaged or re-encoded file?",
            e.valid_up_to() + 1
        )),
    };
    match parsed {
        Ok(r) => {
            read.events.push((r, number));
            true
        }
        Err(why) => {
            read.bad.push((number, why));
            false
        }
    }
}

/// The events of the lines in `block` (the first being line `first_line`) and the bad
/// lines. Blank lines are passed over. Without `skip_bad` reading stops at the first bad line.
pub fn lines(block: &[u8], first_line: usize, skip_bad: bool) -> ReadLines {
    let mut read = ReadLines::default();
    let block = block.strip_suffix(b"\n").unwrap_or(block);
    if block.is_empty() {
        return read;
    }
    for (i, raw) in block.split(|&b| b == b'\n').enumerate() {
        if !line(raw, first_line + i, &mut read) && !skip_bad {
            break;
        }
    }
    read
}
