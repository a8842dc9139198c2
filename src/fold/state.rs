//! `WorkflowState` and the fold rules (those of the reference's `EventReplayer`).
//!
//! Every payload value kept is raw msgpack, so values of any type pass through
//! the fold untouched and decode to the same Python objects the payload holds;
//! instants stay integers until the state is built. The layout is chosen for
//! speed: each event's payload is read in one pass for the keys its rule
//! needs, stage and task fields sit in small vectors searched linearly,
//! constant values and field names are static (no allocation), and entities
//! are found through one hash table of indexes.

use std::borrow::Cow;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use super::EventView;
use crate::codec::validate::validate;
use crate::codec::view::{self, ViewError, NIL};
use crate::time::IsoFormatter;

type Result<T> = std::result::Result<T, ViewError>;

// msgpack fixstr encodings of the statuses the rules write.
const RUNNING: &[u8] = b"\xa7RUNNING";
const SUCCEEDED: &[u8] = b"\xa9SUCCEEDED";
const TERMINAL: &[u8] = b"\xa8TERMINAL";
const CANCELED: &[u8] = b"\xa8CANCELED";
const PAUSED: &[u8] = b"\xa6PAUSED";
const SUSPENDED: &[u8] = b"\xa9SUSPENDED";
const SKIPPED: &[u8] = b"\xa7SKIPPED";
/// The values `Val::Shared` holds.
pub(super) const SHARED: [&[u8]; 8] =
    [NIL, RUNNING, SUCCEEDED, TERMINAL, CANCELED, PAUSED, SUSPENDED, SKIPPED];

/// A kept value.
#[derive(Debug, Clone)]
pub(super) enum Val {
    /// nil and the statuses the rules write: shared statics, no allocation.
    Shared(&'static [u8]),
    /// A payload value, raw msgpack (checked to decode when kept).
    Raw(Box<[u8]>),
    /// An event's instant (µs since the epoch), as `isoformat()` once the
    /// state is built: most are overwritten before then, so none is formatted
    /// during the fold.
    Time(i64),
    /// The entity's own id (its "id" field): the same string as its key.
    Id,
}

const NONE: Val = Val::Shared(NIL);

impl Val {
    /// The value as msgpack, for arithmetic on it (`retry_count + 1`), where
    /// an entity's own id never stands.
    fn msgpack(&self) -> Cow<'_, [u8]> {
        match self {
            Val::Shared(raw) => Cow::Borrowed(raw),
            Val::Raw(raw) => Cow::Borrowed(raw),
            Val::Time(micros) => {
                let mut iso = IsoFormatter::default();
                Cow::Owned(view::encode_str(iso.format(*micros).unwrap_or_default()).into_vec())
            }
            Val::Id => Cow::Borrowed(NIL),
        }
    }
}

/// Fields of a stage or task in first-set order (a handful: linear search wins).
#[derive(Debug, Clone, Default)]
pub(super) struct Fields {
    pub(super) items: Vec<(Cow<'static, str>, Val)>,
}

/// Fields a stage or task has at most under the rules: one allocation each.
const ENTITY_FIELDS: usize = 10;

impl Fields {
    fn entity() -> Self {
        Fields { items: Vec::with_capacity(ENTITY_FIELDS) }
    }

    fn position(&self, key: &str) -> Option<usize> {
        // The rules' keys are statics: most compare by address.
        self.items.iter().position(|(k, _)| same_key(k, key))
    }

    fn put(&mut self, key: &'static str, value: Val) {
        match self.position(key) {
            Some(i) => self.items[i].1 = value,
            None => self.items.push((Cow::Borrowed(key), value)),
        }
    }

    fn put_owned(&mut self, key: &str, value: Val) {
        match self.position(key) {
            Some(i) => self.items[i].1 = value,
            None => self.items.push((Cow::Owned(key.to_owned()), value)),
        }
    }

    fn get(&self, key: &str) -> Option<&Val> {
        self.position(key).map(|i| &self.items[i].1)
    }
}

pub(super) fn same_key(a: &str, b: &str) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

/// Entities by id, in first-seen order.
#[derive(Debug, Clone, Default)]
pub(super) struct Entities {
    table: HashTable<usize>,
    pub(super) items: Vec<(compact_str::CompactString, Fields)>,
}

impl Entities {
    /// The index of entity `id` (`hash`: its `FxBuildHasher` hash), if seen.
    fn find(&self, hash: u64, id: &str) -> Option<usize> {
        let items = &self.items;
        self.table.find(hash, |&i| items[i].0 == id).copied()
    }

    /// Add entity `id`, not seen before; its fields.
    fn insert(&mut self, hash: u64, id: &str, fields: Fields) -> &mut Fields {
        self.items.push((id.into(), fields));
        let i = self.items.len() - 1;
        let items = &self.items;
        self.table.insert_unique(hash, i, |&j| FxBuildHasher.hash_one(items[j].0.as_str()));
        &mut self.items[i].1
    }

    fn set(&mut self, id: &str, fields: Fields) {
        let hash = FxBuildHasher.hash_one(id);
        match self.find(hash, id) {
            Some(i) => self.items[i].1 = fields,
            None => {
                self.insert(hash, id, fields);
            }
        }
    }
}

/// A workflow's state as folded from its events.
#[derive(Debug, Clone)]
pub struct WorkflowState {
    pub(super) workflow_id: String,
    pub(super) status: Val,
    pub(super) application: Val,
    pub(super) name: Val,
    pub(super) start_time: Val,
    pub(super) end_time: Val,
    pub(super) context: Fields,
    /// The context updates from the first one with a key that is not a string
    /// (an int, None...) on, as raw maps: `context` holds string keys only, so
    /// these are applied over it in order, by `dict.update`, when the state is
    /// built (which also merges `1`, `1.0` and `True` as Python does). Empty
    /// for nearly every workflow.
    pub(super) context_tail: Vec<Box<[u8]>>,
    pub(super) stages: Entities,
    pub(super) tasks: Entities,
}

/// A kept copy of `raw`; the statuses the rules themselves write (and nil)
/// are shared statics rather than one allocation per event.
/// A value that would not decode is refused here, while its event is known.
fn owned(raw: &[u8]) -> Result<Val> {
    match SHARED.iter().find(|s| **s == raw) {
        Some(shared) => Ok(Val::Shared(shared)),
        None => {
            validate(raw)?;
            Ok(Val::Raw(raw.into()))
        }
    }
}

/// `data.get(key)` as a kept value (nil when absent).
fn or_nil(found: Option<&[u8]>) -> Result<Val> {
    found.map_or(Ok(NONE), owned)
}

/// `data.get(key, default)` as a kept value.
fn or(found: Option<&[u8]>, default: &'static [u8]) -> Result<Val> {
    found.map_or(Ok(Val::Shared(default)), owned)
}

/// Private extension type for "base + n" where base is not a 64-bit int
/// (a float, a bool, a huge int): Python does the addition when the state is
/// built, as the reference's `retry_count + 1` would.
const DEFERRED_ADD: i8 = 99;

/// `before + 1` as a kept value (`before` absent counts as 0).
fn increment(before: Option<&[u8]>) -> Val {
    let Some(raw) = before else { return Val::Raw(view::encode_int(1)) };
    if let Some(n) = view::as_i64(raw).and_then(|n| n.checked_add(1)) {
        return Val::Raw(view::encode_int(n));
    }
    let (base, n) = match deferred_parts(raw) {
        Some((base, n)) => (base, n + 1),
        None => (raw, 1),
    };
    let mut payload = n.to_be_bytes().to_vec();
    payload.extend_from_slice(base);
    let mut out = Vec::with_capacity(payload.len() + 6);
    let _ = rmp::encode::write_ext_meta(&mut out, payload.len() as u32, DEFERRED_ADD);
    out.extend_from_slice(&payload);
    Val::Raw(out.into())
}

/// (base, n) of a deferred addition made by `increment`.
pub(super) fn deferred_parts(raw: &[u8]) -> Option<(&[u8], i64)> {
    let (head, len) = match *raw.first()? {
        0xc7 => (3, *raw.get(1)? as usize),
        0xc8 => (4, u16::from_be_bytes([*raw.get(1)?, *raw.get(2)?]) as usize),
        0xc9 => (6, u32::from_be_bytes(raw.get(1..5)?.try_into().ok()?) as usize),
        0xd7 => (2, 8),
        0xd8 => (2, 16),
        _ => return None,
    };
    let code = *raw.get(head - 1)? as i8;
    let body = raw.get(head..head + len)?;
    if code != DEFERRED_ADD || body.len() < 8 {
        return None;
    }
    Some((&body[8..], i64::from_be_bytes(body[..8].try_into().ok()?)))
}

impl WorkflowState {
    /// The workflow's own fields after its id, keyed and ordered as the built dict has them.
    pub(super) fn top_fields(&self) -> [(&'static str, &Val); 5] {
        [
            ("status", &self.status),
            ("application", &self.application),
            ("name", &self.name),
            ("start_time", &self.start_time),
            ("end_time", &self.end_time),
        ]
    }

    /// The empty state of a workflow no event has touched.
    pub fn new(workflow_id: &str) -> Self {
        WorkflowState {
            workflow_id: workflow_id.to_owned(),
            status: NONE,
            application: NONE,
            name: NONE,
            start_time: NONE,
            end_time: NONE,
            context: Fields::default(),
            context_tail: Vec::new(),
            stages: Entities::default(),
            tasks: Entities::default(),
        }
    }

    /// Fold one event in. Events of unknown entity or event types change nothing.
    /// Each rule reads all it needs of the payload, in one pass, before it
    /// changes anything.
    pub fn apply(&mut self, ev: &EventView<'_>) -> Result<()> {
        match ev.entity_type {
            "workflow" => self.apply_workflow(ev),
            "stage" => Self::apply_entity(&mut self.stages, Entity::Stage, ev),
            "task" => Self::apply_entity(&mut self.tasks, Entity::Task, ev),
            _ => Ok(()),
        }
    }

    fn update_context(&mut self, ctx: Option<&[u8]>) -> Result<()> {
        if let Some(ctx) = ctx {
            // A context that is not a mapping (None) updates nothing. (A bad
            // value part-way fails the whole fold; skip_corrupt checks the
            // payload whole before any rule runs.)
            match view::map_entries(ctx)? {
                Some((entries, true)) if self.context_tail.is_empty() => {
                    for (k, v) in entries {
                        self.context.put_owned(k, owned(v)?);
                    }
                }
                Some(_) => self.push_context_tail(ctx)?,
                None => {}
            }
        }
        Ok(())
    }

    /// Keep a context map with a key that is not a string (checked to decode) for `to_py`.
    fn push_context_tail(&mut self, ctx: &[u8]) -> Result<()> {
        validate(ctx)?;
        self.context_tail.push(ctx.into());
        Ok(())
    }

    fn apply_workflow(&mut self, ev: &EventView<'_>) -> Result<()> {
        let keys = match ev.event_type {
            "workflow.created" => [Some("application"), Some("name")],
            "workflow.started" | "context.updated" => [Some("context"), None],
            "workflow.completed" | "workflow.failed" => [Some("status"), None],
            _ => [None, None],
        };
        let [a, b] = if keys == [None, None] { [None, None] } else { view::lookup(ev.data, keys)? };
        match ev.event_type {
            "workflow.created" => {
                (self.application, self.name) = (or_nil(a)?, or_nil(b)?);
            }
            "workflow.started" => {
                self.update_context(a)?;
                self.start_time = Val::Time(ev.timestamp_us);
                self.status = Val::Shared(RUNNING);
            }
            "workflow.completed" => {
                self.status = or(a, SUCCEEDED)?;
                self.end_time = Val::Time(ev.timestamp_us);
            }
            "workflow.failed" => {
                self.status = or(a, TERMINAL)?;
                self.end_time = Val::Time(ev.timestamp_us);
            }
            "workflow.canceled" => {
                self.end_time = Val::Time(ev.timestamp_us);
                self.status = Val::Shared(CANCELED);
            }
            "workflow.paused" => self.status = Val::Shared(PAUSED),
            "workflow.resumed" => self.status = Val::Shared(RUNNING),
            "context.updated" => self.update_context(a)?,
            _ => {}
        }
        Ok(())
    }

    /// A stage or task event: its entity is made on first sight with its
    /// kind's `first` keys of that event's payload (after "id"), then the
    /// event's rule changes it.
    fn apply_entity(entities: &mut Entities, kind: Entity, ev: &EventView<'_>) -> Result<()> {
        let first = kind.first();
        let hash = FxBuildHasher.hash_one(ev.entity_id);
        let found = entities.find(hash, ev.entity_id);
        let new = found.is_none();
        let rule = Rule::of(kind, ev.event_type);
        let (x, y) = rule.keys();
        let wanted = [first[0].filter(|_| new), first[1].filter(|_| new), first[2].filter(|_| new), x, y];
        let [a, b, c, x, y] =
            if wanted.iter().any(Option::is_some) { view::lookup(ev.data, wanted)? } else { [None; 5] };
        let update = rule.read(x, y)?;
        let entity = match found {
            Some(i) => &mut entities.items[i].1,
            None => {
                let mut f = Fields::entity();
                f.put("id", Val::Id);
                for (key, value) in first.into_iter().zip([a, b, c]) {
                    if let Some(key) = key {
                        f.put(key, or_nil(value)?);
                    }
                }
                entities.insert(hash, ev.entity_id, f)
            }
        };
        update.apply(entity, ev.timestamp_us);
        Ok(())
    }

    /// A state from the msgpack of a dict shaped like `to_py`'s (a snapshot).
    pub fn from_msgpack(workflow_id: &str, raw: &[u8]) -> Result<Self> {
        let mut state = WorkflowState::new(workflow_id);
        let (entries, _) =
            view::map_entries(raw)?.ok_or_else(|| ViewError("snapshot state is not a map".into()))?;
        let fields = |raw: &[u8]| -> Result<Fields> {
            let mut f = Fields::default();
            for (k, v) in view::map_entries(raw)?.map(|(e, _)| e).unwrap_or_default() {
                f.put_owned(k, owned(v)?);
            }
            Ok(f)
        };
        for (key, value) in entries {
            match key {
                "status" => state.status = owned(value)?,
                "application" => state.application = owned(value)?,
                "name" => state.name = owned(value)?,
                "start_time" => state.start_time = owned(value)?,
                "end_time" => state.end_time = owned(value)?,
                "context" => match view::map_entries(value)? {
                    Some((_, false)) => state.push_context_tail(value)?,
                    _ => state.context = fields(value)?,
                },
                "stages" | "tasks" => {
                    let target = if key == "stages" { &mut state.stages } else { &mut state.tasks };
                    for (id, entry) in view::map_entries(value)?.map(|(e, _)| e).unwrap_or_default() {
                        target.set(id, fields(entry)?);
                    }
                }
                _ => {}
            }
        }
        Ok(state)
    }
}

/// The kinds of entity a workflow's state holds apart from itself.
#[derive(Clone, Copy)]
enum Entity {
    Stage,
    Task,
}

impl Entity {
    /// The fields a new entity takes from its first event's payload.
    fn first(self) -> [Option<&'static str>; 3] {
        match self {
            Entity::Stage => [Some("ref_id"), Some("type"), Some("name")],
            Entity::Task => [Some("name"), Some("stage_id"), None],
        }
    }
}

/// The rule of a stage or task event, found once per event.
#[derive(Clone, Copy)]
enum Rule {
    Nothing,
    Started,
    Completed,
    Failed,
    Skipped,
    Status(&'static [u8]),
    Retried,
}

impl Rule {
    fn of(kind: Entity, event_type: &str) -> Rule {
        match (kind, event_type) {
            (Entity::Stage, "stage.started") | (Entity::Task, "task.started") => Rule::Started,
            (Entity::Stage, "stage.completed") | (Entity::Task, "task.completed") => Rule::Completed,
            (Entity::Stage, "stage.failed") | (Entity::Task, "task.failed") => Rule::Failed,
            (Entity::Stage, "stage.skipped") => Rule::Skipped,
            (Entity::Stage, "stage.suspended") => Rule::Status(SUSPENDED),
            (Entity::Stage, "stage.resumed") => Rule::Status(RUNNING),
            (Entity::Stage, "stage.canceled") => Rule::Status(CANCELED),
            (Entity::Task, "task.retried") => Rule::Retried,
            _ => Rule::Nothing,
        }
    }

    /// The payload keys the rule reads.
    fn keys(self) -> (Option<&'static str>, Option<&'static str>) {
        match self {
            Rule::Completed => (Some("status"), Some("outputs")),
            Rule::Failed => (Some("status"), Some("error")),
            Rule::Skipped => (Some("reason"), None),
            Rule::Retried => (Some("retry_count"), None),
            Rule::Nothing | Rule::Started | Rule::Status(_) => (None, None),
        }
    }

    /// The rule's change, from the values found under its `keys`.
    fn read(self, x: Option<&[u8]>, y: Option<&[u8]>) -> Result<Update> {
        Ok(match self {
            Rule::Nothing => Update::Nothing,
            Rule::Started => Update::Started,
            Rule::Completed => Update::Completed(or(x, SUCCEEDED)?, y.map(owned).transpose()?),
            Rule::Failed => Update::Failed(or(x, TERMINAL)?, or_nil(y)?),
            Rule::Skipped => Update::Skipped(or_nil(x)?),
            Rule::Status(status) => Update::Status(status),
            Rule::Retried => Update::Retried(x.map(owned).transpose()?),
        })
    }
}

/// What a stage or task event does to its entity, read from the payload
/// before anything is changed.
enum Update {
    Nothing,
    Started,
    Status(&'static [u8]),
    /// status, and outputs if given.
    Completed(Val, Option<Val>),
    /// status, error.
    Failed(Val, Val),
    /// reason.
    Skipped(Val),
    /// The retry count given, or None: one more than before.
    Retried(Option<Val>),
}

impl Update {
    fn apply(self, entity: &mut Fields, timestamp_us: i64) {
        match self {
            Update::Nothing => {}
            Update::Started => {
                entity.put("status", Val::Shared(RUNNING));
                entity.put("start_time", Val::Time(timestamp_us));
            }
            Update::Status(status) => entity.put("status", Val::Shared(status)),
            Update::Completed(status, outputs) => {
                entity.put("status", status);
                entity.put("end_time", Val::Time(timestamp_us));
                if let Some(outputs) = outputs {
                    entity.put("outputs", outputs);
                }
            }
            Update::Failed(status, error) => {
                entity.put("status", status);
                entity.put("end_time", Val::Time(timestamp_us));
                entity.put("error", error);
            }
            Update::Skipped(reason) => {
                entity.put("status", Val::Shared(SKIPPED));
                entity.put("skip_reason", reason);
            }
            Update::Retried(Some(count)) => entity.put("retry_count", count),
            Update::Retried(None) => {
                let before = entity.get("retry_count").map(|v| v.msgpack().into_owned());
                entity.put("retry_count", increment(before.as_deref()));
            }
        }
    }
}
