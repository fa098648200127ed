//! The domain words the Orthrus server and its plugins share, so that a
//! status reads the same on a page, in a mail and in a plugin's output.
//! No dependencies: this crate is compiled into the server and into every
//! plugin (`wasm32-wasip2`).

#![deny(missing_docs)]

mod build_status;

pub use build_status::{BuildStatus, StepStatus, UnknownStatus};
