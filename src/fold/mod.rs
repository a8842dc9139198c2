//! Replay: folding a workflow's events into its state, in Rust.
//!
//! Backends stream borrowed `EventView`s (no `Event` objects, no payload
//! decoding beyond the few keys a rule reads); `WorkflowState` applies the
//! reference's rules (`state`) and becomes a Python dict only at the end
//! (`to_py`, with the garbage collector paused: `crate::gc_pause`).

mod background_save;
mod folder;
mod state;
mod to_msgpack;
mod to_py;
mod view;

pub use background_save::SnapshotSaver;
pub use folder::{FoldOptions, Folder};
pub use state::WorkflowState;
pub use view::EventView;
