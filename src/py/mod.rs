//! The Python face of the stores: `NativeStore` turns Python arguments into
//! records and filters, runs a backend (`crate::store`) with the GIL released,
//! and turns what it returns back into Python objects.

pub mod native_store;
