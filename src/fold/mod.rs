//! Replay: folding a workflow's events into its state, in Rust.
//!
//! Backends stream borrowed `EventView`s (no `Event` objects, no payload
//! decoding beyond the few keys a rule reads); `WorkflowState` applies the
//! reference's rules and becomes a Python dict only at the end.

mod folder;
mod state;
mod view;

pub use folder::{FoldOptions, Folder};
pub use state::WorkflowState;
pub use view::EventView;
